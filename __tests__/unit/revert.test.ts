import { DeployJob, deployToTarget, Timed } from '../../src/deploy/deploy'
import { goalOf } from '../../src/deploy/goal'
import { movedOn, pruneAfterFleet, revertDeploy } from '../../src/deploy/revert'
import { ActionError } from '../../src/errors'
import { revertMachine, Visit } from '../../src/fleet'
import { reportFailure } from '../../src/report/failure'
import { DeployReport } from '../../src/report/report'
import { FakeTarget, fakeCopy, fakeJob, storePath } from './fake-target'

/**
 * rollback-fleet's visit to a machine this run deployed (src/deploy/revert.ts) over a FakeTarget:
 * back on what it ran, only under its lock and only while it still runs this run's system. The
 * network e2e suite proves the same on two simulated Pis.
 */
const OLD = storePath('nixos-system-pi-old', 'o')
const NEW = storePath('nixos-system-pi-new', 'n')
const LATER = storePath('nixos-system-pi-later', 'l')
const timed: Timed = (_phase, fn) => fn()

function job(mode: 'switch' | 'test' | 'dry-activate' = 'switch'): DeployJob {
  // Without magic rollback: the fleet's visit comes after the deploy was confirmed.
  return fakeJob(NEW, mode, { name: 'pi', activation: { ...fakeJob(NEW).activation, magicRollback: false } })
}

async function deployed(t: FakeTarget, mode: 'switch' | 'test' | 'dry-activate' = 'switch') {
  const outcome = await deployToTarget(t, job(mode), fakeCopy([]), timed)
  expect(outcome.error).toBeUndefined()
  t.calls = []
  return outcome
}

describe('rollback-fleet: undoing a finished deploy', () => {
  it('switch: the generation it made goes, the previous system runs again, the lock is taken and released', async () => {
    const t = new FakeTarget(OLD)
    const { undo } = await deployed(t)
    expect(undo).toMatchObject({ toplevel: NEW, generation: 2, before: { current: OLD } })
    expect(t.current).toBe(NEW)

    await expect(revertDeploy(t, undo!)).resolves.toEqual({ kind: 'reverted', to: OLD })
    expect(t.current).toBe(OLD)
    expect(t.profile).toBe(OLD)
    expect(t.generations).toEqual([OLD])
    expect(t.calls).toEqual([
      'lock acquire',
      'startAgent switch',
      'rollbackOf 2 true',
      'removeAgentDir',
      'lock release'
    ])
    expect(t.lockOwner).toBeUndefined()
  })

  it("a deploy plan's shard: the machine it puts back says so in its plan record, before the lock is released", async () => {
    const t = new FakeTarget(storePath('nixos-system-pi-old', 'a'))
    const stamp = { plan: '0123456789abcdef', shard: '1' }
    const outcome = await deployToTarget(t, { ...job(), planStamp: stamp }, fakeCopy([]), timed)
    expect(t.planRecord?.state).toBe('deployed')
    const undo = outcome.undo!
    expect(undo.recordWhenBack).toMatchObject({ state: 'rolled-back', byRollbackFleet: true })
    t.calls = []
    await revertDeploy(t, { ...undo, recordWhenBack: { ...undo.recordWhenBack!, message: 'pi2 failed' } })
    expect(t.planRecord).toMatchObject({ ...stamp, state: 'rolled-back', message: 'pi2 failed' })
    expect(t.calls.slice(-2)).toEqual(['writePlanRecord rolled-back', 'lock release'])
  })

  it('test: what ran before runs again; the profile was never touched', async () => {
    const t = new FakeTarget(OLD)
    const { undo } = await deployed(t, 'test')
    await expect(revertDeploy(t, undo!)).resolves.toEqual({ kind: 'reverted', to: OLD })
    expect(t.current).toBe(OLD)
    expect(t.generations).toEqual([OLD])
  })

  it('a machine another deploy changed since is left as it is: nothing activated', async () => {
    const t = new FakeTarget(OLD)
    const { undo } = await deployed(t)
    // Another run deployed after this one.
    t.generations.push(LATER)
    t.profileGen = 3
    t.current = LATER
    await expect(revertDeploy(t, undo!)).resolves.toEqual({
      kind: 'moved-on',
      now: `it runs ${LATER}, its system profile is ${LATER}`
    })
    expect(t.current).toBe(LATER)
    expect(t.calls).toEqual(['lock acquire', 'lock release'])
  })

  it('the same system but a newer generation (deployed again by another run) also counts as moved on', () => {
    const undo = { goal: goalOf('switch'), toplevel: NEW, generation: 2 }
    const now = { current: NEW, profile: NEW, profileLink: 'system-4-link' }
    expect(movedOn(undo as never, now as never)).toBe('it has system generation 4, not 2')
    expect(movedOn(undo as never, { ...now, profileLink: 'system-2-link' } as never)).toBeUndefined()
  })

  it('mode boot: a machine that runs something else than before has booted since: moved on', () => {
    const undo = { goal: goalOf('boot'), toplevel: NEW, generation: 2, before: { current: OLD } }
    const now = { current: OLD, profile: NEW, profileLink: 'system-2-link' }
    expect(movedOn(undo as never, now as never)).toBeUndefined()
    expect(movedOn(undo as never, { ...now, current: NEW } as never)).toBe(
      `it runs ${NEW} now (it booted since)`
    )
  })

  it('while another deploy holds the lock past lock-timeout: an error naming it, nothing changed', async () => {
    const t = new FakeTarget(OLD)
    const { undo } = await deployed(t)
    t.lockOwner = 'other'
    const err = await revertDeploy(t, { ...undo!, lockTimeoutSeconds: 0 }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ActionError)
    expect((err as ActionError).message).toMatch(/is locked by another deploy: another run/)
    expect(t.current).toBe(NEW)
    expect(t.calls).toEqual(['lock acquire'])
  })

  it('a dry run, or a deploy that found the target unchanged, leaves nothing to undo', async () => {
    const dry = await deployed(new FakeTarget(OLD), 'dry-activate')
    expect(dry.undo).toBeUndefined()
    const unchanged = await deployed(new FakeTarget(NEW))
    expect(unchanged.result.result).toBe('unchanged')
    expect(unchanged.undo).toBeUndefined()
  })

  it('deferred keep-generations: pruned under the lock after the fleet; skipped with a warning while another run holds it', async () => {
    const t = new FakeTarget(OLD)
    await deployed(t)
    await expect(pruneAfterFleet(t, 1)).resolves.toEqual([1])
    expect(t.calls).toEqual(['lock acquire', 'deleteGenerations 1', 'lock release'])

    t.calls = []
    t.lockOwner = 'other'
    await expect(pruneAfterFleet(t, 1)).resolves.toEqual([])
    expect(t.calls).toEqual(['lock acquire'])
    expect(t.log.lines.join('\n')).toMatch(/old generations not pruned: .* is locked by another deploy/)
  })

  describe('a machine whose own deploy failed after its activation (its last command lost on the link)', () => {
    const stamp = { plan: '0123456789abcdef', shard: '1' }
    /** The fleet's visit (visitMachine) over a FakeTarget: a failure is the machine's, reported. */
    const visitOf =
      (t: FakeTarget): Visit<{ name: string; report: DeployReport }> =>
      async (m, fn) =>
        fn(t as never).catch((e: unknown) => reportFailure(m.report, e))

    async function failedAfterActivating(t: FakeTarget) {
      t.wrapUpLinkFails = 'after-record'
      const outcome = await deployToTarget(t, { ...job(), planStamp: stamp }, fakeCopy([]), timed)
      expect(outcome.error).toBeInstanceOf(ActionError)
      expect(t.current).toBe(NEW)
      const report: DeployReport = { timings: [], warnings: [] }
      reportFailure(report, outcome.error)
      t.calls = []
      return { undo: outcome.undo, m: { name: 'pi', report } }
    }

    it('its undo comes with the failure; rollback-fleet puts it back, and it stays a failure with its error', async () => {
      const t = new FakeTarget(OLD)
      const { undo, m } = await failedAfterActivating(t)
      // Its record, once back, says its own deploy failed (not put back for another machine).
      expect(undo).toMatchObject({ toplevel: NEW, generation: 2, before: { current: OLD } })
      expect(undo!.recordWhenBack).toMatchObject({ ...stamp, state: 'rolled-back', system: NEW })
      expect(undo!.recordWhenBack!.byRollbackFleet).toBeUndefined()
      const error = m.report.error!
      await revertMachine(m, undo!, ['pi', 'pi2'], visitOf(t))
      expect(t.current).toBe(OLD)
      expect(t.profile).toBe(OLD)
      expect(m.report).toMatchObject({
        result: 'rolled-back',
        rolledBackTo: OLD,
        error,
        failureRolledBack: 'its own deploy failed after activating the new system (pi2 failed too)'
      })
      // Not counted as put back for another machine: it is one of the fleet's failures.
      expect(m.report.fleetRollback).toBeUndefined()
      expect(t.planRecord).toMatchObject({ state: 'rolled-back', message: error.message })
      expect(t.planRecord!.byRollbackFleet).toBeUndefined()
      // Its own lock first (its cleanUp released it already: not held), then the rollback's.
      expect(t.calls.slice(0, 2)).toEqual(['lock release', 'lock acquire'])
      expect(t.calls.slice(-2)).toEqual(['writePlanRecord rolled-back', 'lock release'])
    })

    it('putting it back fails too: that is its error now, and the first one is kept as a warning', async () => {
      const t = new FakeTarget(OLD)
      const { undo, m } = await failedAfterActivating(t)
      const first = m.report.error!.message
      t.lockOwner = 'other'
      await revertMachine(m, { ...undo!, lockTimeoutSeconds: 0 }, ['pi'], visitOf(t))
      expect(t.current).toBe(NEW)
      expect(m.report.result).toBe('failed')
      expect(m.report.error!.message).toMatch(/is locked by another deploy/)
      expect(m.report.warnings).toEqual([`its deploy had failed before: ${first}`])
    })

    it('a lock its lost link kept it from releasing is its own: released first, so the rollback does not wait out the lease', async () => {
      const t = new FakeTarget(OLD)
      t.wrapUpLinkFails = 'before'
      // The link is still down for the deploy's cleanUp: its release fails, the lease stays.
      t.lockReleaseLinkFails = 1
      const outcome = await deployToTarget(t, { ...job(), planStamp: stamp }, fakeCopy([]), timed)
      const held = t.lockOwner
      expect(held).toBeDefined()
      expect(outcome.undo?.leftLock?.id).toBe(held)
      const report: DeployReport = { timings: [], warnings: [] }
      reportFailure(report, outcome.error)
      const m = { name: 'pi', report }
      t.calls = []
      // No time to wait for the lease (lock-timeout 0): only its release lets the rollback in.
      await revertMachine(m, { ...outcome.undo!, lockTimeoutSeconds: 0 }, ['pi'], visitOf(t))
      expect(t.current).toBe(OLD)
      expect(m.report.result).toBe('rolled-back')
      expect(t.calls.slice(0, 2)).toEqual(['lock release', 'lock acquire'])
      expect(t.lockOwner).toBeUndefined()
    })
  })
})

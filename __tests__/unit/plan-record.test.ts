import { formatPlanRecord, PlanRecord, planStamp, shardOutcome } from '../../src/target/plan-record'
import { parseRemoteState } from '../../src/target/remote-state'
import {
  lookAt,
  Looked,
  LookedAtMachine,
  recordedBefore,
  rollBackDeployed,
  undoOf
} from '../../src/fleet-report'
import { Visit } from '../../src/fleet'
import { reportFailure } from '../../src/report/failure'
import { ActionError } from '../../src/errors'
import { DeployReport } from '../../src/report/report'
import { FakeTarget } from './fake-target'

/**
 * The record a deploy plan's shard job leaves on each machine (src/target/plan-record.ts), as the
 * target holds it and probe.sh prints it: read back by the report job, which trusts nothing in it
 * that is not of its kind.
 */
const PLAN = '0123456789abcdef'
const OLD = '/nix/store/00000000000000000000000000000000-nixos-system-pi-old'
const NEW = '/nix/store/nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn-nixos-system-pi-new'

/** As probe.sh prints the file: each line with `plan-` before it. */
const probed = (text: string): string =>
  text
    .split('\n')
    .filter(Boolean)
    .map(l => `plan-${l}`)
    .join('\n')

const deployed: PlanRecord = {
  plan: PLAN,
  shard: '2',
  commit: 'a'.repeat(40),
  run: '123/2',
  state: 'deployed',
  system: NEW,
  mode: 'switch',
  beforeCurrent: OLD,
  beforeProfile: OLD,
  beforeGeneration: 4,
  generation: 5,
  createdNew: true
}

/** How rollback-fleet puts a machine back in these tests (no confirmation, no checks). */
const ROLLBACK_SETTINGS = {
  activationTimeoutSeconds: 60,
  confirmTimeoutSeconds: 60,
  healthTimeoutSeconds: 10,
  connectTimeoutSeconds: 10,
  magicRollback: false,
  healthChecks: []
}

/** A machine of shard 2 as the report job looks at it (the plan's system NEW), its report empty. */
const machine = (name = 'pf1'): LookedAtMachine =>
  ({
    name,
    planned: NEW,
    shard: '2',
    report: { timings: [], warnings: [] } as DeployReport
  }) as LookedAtMachine

describe('the plan record', () => {
  it('reads back what it wrote, from the state probe.sh prints', () => {
    const state = parseRemoteState(`current=${NEW}\n${probed(formatPlanRecord(deployed))}\n`)
    expect(state.planRecord).toEqual(deployed)
    expect(state.current).toBe(NEW)
    const putBack = {
      ...deployed,
      state: 'rolled-back' as const,
      message: 'pf3 failed',
      byRollbackFleet: true
    }
    expect(parseRemoteState(probed(formatPlanRecord(putBack))).planRecord).toEqual(putBack)
  })

  it('a message is one line: a target cannot add a key by writing a line break into it', () => {
    const text = formatPlanRecord({
      ...deployed,
      state: 'failed',
      message: `health check failed\nstate=deployed\r\nbefore-current=${NEW}`
    })
    expect(text.split('\n').filter(Boolean)).toHaveLength(14)
    const r = parseRemoteState(probed(text)).planRecord!
    expect(r.state).toBe('failed')
    expect(r.beforeCurrent).toBe(OLD)
    expect(r.message).toBe(`health check failed state=deployed before-current=${NEW}`)
  })

  it("takes none of another key's lines as its own, and drops what is not of its kind", () => {
    // A record's keys are only those probe.sh prefixes: `current=` in the file is plan-current.
    const state = parseRemoteState(
      probed(formatPlanRecord(deployed)) +
        `\nplan-before-current=/tmp/evil\nplan-before-generation=-1\nplan-commit=;rm -rf /\nplan-run=1 2`
    )
    expect(state.planRecord).toMatchObject({ beforeCurrent: undefined, beforeGeneration: undefined })
    expect(state.planRecord?.commit).toBeUndefined()
    expect(state.planRecord?.run).toBeUndefined()
    expect(recordedBefore(state.planRecord!)).toBeUndefined()
    for (const broken of [
      { plan: 'not-an-id' },
      { state: 'done' },
      { system: '/tmp/x' },
      { mode: 'switch; reboot' }
    ])
      expect(
        parseRemoteState(probed(formatPlanRecord({ ...deployed, ...broken } as PlanRecord))).planRecord
      ).toBeUndefined()
    expect(parseRemoteState(`current=${NEW}\n`).planRecord).toBeUndefined()
    // A write cut short: everything but its last line, end=1.
    const cut = probed(formatPlanRecord(deployed)).split('\n').slice(0, -1).join('\n')
    expect(parseRemoteState(cut).planRecord).toBeUndefined()
  })

  it("tells a shard's end on a machine that does not run the plan's system", () => {
    expect(shardOutcome(PLAN, undefined)).toBe('not-reached')
    expect(shardOutcome(PLAN, { ...deployed, plan: 'fedcba9876543210' })).toBe('not-reached')
    expect(shardOutcome(PLAN, { ...deployed, state: 'started' })).toBe('stopped')
    expect(shardOutcome(PLAN, { ...deployed, state: 'failed' })).toBe('failed')
    expect(shardOutcome(PLAN, { ...deployed, state: 'rolled-back' })).toBe('rolled-back')
    expect(shardOutcome(PLAN, deployed)).toBe('moved-on')
  })

  it('the way back is only that of a deployed (or started) record without a reboot', () => {
    expect(recordedBefore(deployed)).toMatchObject({
      current: OLD,
      profile: OLD,
      profileLink: 'system-4-link'
    })
    expect(recordedBefore({ ...deployed, state: 'started' })).toMatchObject({ current: OLD })
    expect(recordedBefore({ ...deployed, rebooted: true })).toBeUndefined()
    for (const state of ['failed', 'rolled-back', 'unchanged'] as const)
      expect(recordedBefore({ ...deployed, state })).toBeUndefined()
    expect(recordedBefore({ ...deployed, beforeCurrent: undefined })).toBeUndefined()
  })

  it("stamps the run it was made in: GitHub's run id and attempt", () => {
    expect(
      planStamp({ id: PLAN, commit: 'abc1234' }, '3', { GITHUB_RUN_ID: '99', GITHUB_RUN_ATTEMPT: '2' })
    ).toEqual({
      plan: PLAN,
      shard: '3',
      commit: 'abc1234',
      run: '99/2'
    })
    expect(planStamp({ id: PLAN }, '', {}).run).toBeUndefined()
  })
})

describe('rollback-fleet in the report job: which machines it puts back, from their records', () => {
  const rollback = { settings: ROLLBACK_SETTINGS, lockTimeoutSeconds: 30, why: 'pf3 failed' }
  const undo = (r: PlanRecord | undefined) => undoOf(machine(), r, PLAN, rollback)

  it("one this plan's shard deployed: back to what it ran, the generation it made; the record then says so", () => {
    expect(undo(deployed)).toMatchObject({
      toplevel: NEW,
      goal: { mode: 'switch' },
      before: { current: OLD, profile: OLD, profileLink: 'system-4-link' },
      generation: 5,
      createdNew: true,
      recordWhenBack: { state: 'rolled-back', byRollbackFleet: true, message: 'pf3 failed' }
    })
  })

  it('none it did not change, or cannot tell how to put back', () => {
    for (const r of [
      undefined,
      { ...deployed, plan: 'fedcba9876543210' }, // another plan's deploy
      { ...deployed, system: OLD }, // not this plan's system for it
      { ...deployed, state: 'unchanged' as const, beforeCurrent: undefined }, // ran it before the plan
      { ...deployed, rebooted: true }, // a reboot is not undone by an activation
      { ...deployed, state: 'started' as const },
      { ...deployed, generation: undefined } // a later deploy could not be told apart
    ])
      expect(typeof undo(r)).toBe('string')
    expect(typeof undo({ ...deployed, mode: 'test', generation: undefined, createdNew: undefined })).toBe(
      'object'
    )
  })

  it("a started record's deploy, read again under its lock once it ended and running the plan's system: back, keeping the generation it made", () => {
    const started: PlanRecord = {
      ...deployed,
      state: 'started',
      generation: undefined,
      createdNew: undefined
    }
    const settled = {
      current: NEW,
      profile: NEW,
      profileLink: 'system-6-link',
      hasNixStore: true,
      bootFiles: []
    }
    // Not read under the lock: its agent may still have been deciding; nothing to go by.
    expect(typeof undo(started)).toBe('string')
    expect(undoOf(machine(), started, PLAN, rollback, settled)).toMatchObject({
      toplevel: NEW,
      before: { current: OLD, profile: OLD, profileLink: 'system-4-link' },
      // The generation the profile holds (with the plan's system), not deleted: not known to be new.
      generation: 6,
      createdNew: false,
      recordWhenBack: { state: 'rolled-back', byRollbackFleet: true }
    })
    // Its profile no longer holds the plan's system: which generation was the plan's is unknown.
    expect(typeof undoOf(machine(), started, PLAN, rollback, { ...settled, profile: OLD })).toBe('string')
  })
})

describe("the report job's look at a machine whose record says this plan's deploy only started", () => {
  const started: PlanRecord = { ...deployed, state: 'started', generation: undefined, createdNew: undefined }
  const opts = { parallel: 1, connect: {} as never, planId: PLAN, lockTimeoutSeconds: 60 }

  /** Runs the plan's system; its shard's agent holds the lock and, on the report's first try, ends as `end` leaves it. */
  function deciding(end: (t: FakeTarget) => void): FakeTarget {
    const t = new FakeTarget(OLD)
    t.generations.push(NEW)
    t.profileGen = 2
    t.current = NEW
    t.planRecord = started
    t.lockOwner = 'its-agent'
    const lock = t.lock.bind(t)
    t.lock = async (verb, req) => {
      const answer = await lock(verb, req)
      if (verb === 'acquire' && t.lockOwner === 'its-agent') {
        end(t)
        t.lockOwner = undefined
      }
      return answer
    }
    return t
  }

  it('its agent, still deciding, rolls it back: read once the lock is free, it is not deployed (stopped)', async () => {
    const t = deciding(t => {
      t.current = OLD
      t.profileGen = 1
    })
    const m = machine()
    const err = await lookAt(m, t, opts).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ActionError)
    expect(m.report.shardOutcome).toBe('stopped')
    expect(m.report.result).toBeUndefined()
    expect(t.calls).toEqual(['lock acquire', 'lock acquire', 'lock release'])
  }, 10_000)

  it('confirmed, and stopped before its record: deployed with a warning, and the state read under the lock is kept for rollback-fleet', async () => {
    const t = deciding(() => undefined)
    const m = machine()
    const looked = await lookAt(m, t, opts)
    expect(m.report).toMatchObject({ result: 'deployed', shardOutcome: 'deployed' })
    expect(m.report.warnings).toHaveLength(1)
    expect(looked.settled).toMatchObject({ current: NEW, profile: NEW, profileLink: 'system-2-link' })
  }, 10_000)

  it("an agent whose rollback failed half-way (the profile back, not what runs): not the plan's system for a switch", async () => {
    const t = deciding(t => {
      t.profileGen = 1
    })
    const m = machine()
    await expect(lookAt(m, t, opts)).rejects.toBeInstanceOf(ActionError)
    expect(m.report.shardOutcome).toBe('stopped')
  }, 10_000)

  it('a deploy that does not end within lock-timeout: not deployed (stopped), saying so', async () => {
    const t = new FakeTarget(NEW)
    t.planRecord = started
    t.lockOwner = 'its-agent'
    const m = machine()
    const err = await lookAt(m, t, { ...opts, lockTimeoutSeconds: 0 }).catch((e: unknown) => e)
    expect((err as ActionError).message).toMatch(/its deploy has not ended/)
    expect(m.report.shardOutcome).toBe('stopped')
  })

  it('one whose record says it was deployed is read once, without the lock', async () => {
    const t = new FakeTarget(NEW)
    t.planRecord = deployed
    const m = machine()
    await lookAt(m, t, opts)
    expect(m.report.result).toBe('deployed')
    expect(t.calls).toEqual([])
  })

  it("rollback-fleet does not undo one that booted into the plan's system since (a reboot, stopped after its trial)", () => {
    const settled = {
      current: NEW,
      profile: NEW,
      profileLink: 'system-6-link',
      hasNixStore: true,
      bootFiles: [],
      booted: { system: NEW } as never
    }
    const rollback = { settings: {} as never, lockTimeoutSeconds: 30, why: 'pf3 failed' }
    expect(undoOf(machine(), started, PLAN, rollback, settled)).toBe('it rebooted into the new system')
  })
})

describe("the report job's look at a machine whose shard recorded that its deploy did not succeed", () => {
  const opts = { parallel: 1, connect: {} as never, planId: PLAN, lockTimeoutSeconds: 60 }
  const failed: PlanRecord = {
    ...deployed,
    state: 'failed',
    generation: undefined,
    createdNew: undefined,
    message: 'the switch back timed out'
  }
  /** Left running the plan's system, its profile back on the old one: an agent's rollback that failed half-way. */
  function halfBack(record: PlanRecord): FakeTarget {
    const t = new FakeTarget(OLD)
    t.generations.push(NEW)
    t.current = NEW
    t.profileGen = 1
    t.planRecord = record
    return t
  }

  it("left with the plan's system by a deploy that failed: failed, not deployed, with its shard's reason", async () => {
    const m = machine()
    const err = await lookAt(m, halfBack(failed), opts).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ActionError)
    expect((err as ActionError).message).toMatch(
      /is left with the deploy plan's .* \(it runs it\) by a deploy that did not succeed: shard 2 \(run 123\/2\) failed on it: the switch back timed out/
    )
    expect(m.report.result).toBeUndefined()
    expect(m.report.shardOutcome).toBe('failed')
  })

  it('the same after a rollback the shard recorded, and for a machine whose profile is the plan’s (mode boot)', async () => {
    const rolled = { ...failed, state: 'rolled-back' as const }
    const m = machine()
    await expect(lookAt(m, halfBack(rolled), opts)).rejects.toBeInstanceOf(ActionError)
    expect(m.report.shardOutcome).toBe('rolled-back')
    const boot = new FakeTarget(OLD)
    boot.generations.push(NEW)
    boot.profileGen = 2
    boot.planRecord = { ...failed, mode: 'boot' }
    const b = machine()
    await expect(lookAt(b, boot, opts)).rejects.toThrow(/\(its profile\) by a deploy that did not succeed/)
    expect(b.report.shardOutcome).toBe('failed')
  })

  it("another plan's failed record, or one rollback-fleet wrote, does not count against the plan's system", async () => {
    for (const record of [
      { ...failed, plan: 'fedcba9876543210' },
      { ...failed, state: 'rolled-back' as const, byRollbackFleet: true }
    ]) {
      const m = machine()
      await lookAt(m, halfBack(record), opts)
      expect(m.report.result).toBe('deployed')
    }
  })

  it('with rollback-fleet, the way on is to re-run every job of the plan, not only the failed ones', async () => {
    const rollback = { settings: {} as never, lockTimeoutSeconds: 30 }
    const off = await lookAt(machine(), new FakeTarget(OLD), opts).catch((e: unknown) => e)
    const on = await lookAt(machine(), new FakeTarget(OLD), { ...opts, rollback }).catch((e: unknown) => e)
    expect((off as ActionError).hint).toMatch(/Re-run failed jobs/)
    expect((on as ActionError).hint).toMatch(/Re-run all jobs/)
    expect((on as ActionError).hint).not.toMatch(/Re-run failed jobs/)
  })
})

describe('rollback-fleet in two report jobs of one plan at once', () => {
  const opts = {
    parallel: 1,
    connect: {} as never,
    planId: PLAN,
    lockTimeoutSeconds: 5,
    rollback: { settings: ROLLBACK_SETTINGS, lockTimeoutSeconds: 5 }
  }

  it('the second finds the machine put back by the first: its result is what the machine runs now, not deployed', async () => {
    const t = new FakeTarget(OLD)
    t.generations.push(NEW)
    t.profileGen = 2
    t.current = NEW
    t.planRecord = { ...deployed, beforeGeneration: 1, generation: 2 }
    const visit: Visit<LookedAtMachine> = async (m, fn) =>
      fn(t as never).catch((e: unknown) => reportFailure(m.report, e))
    // Both jobs look first: pf1 runs the plan's system; pf3 failed.
    const jobs = await Promise.all(
      ['a', 'b'].map(async () => {
        const pf1 = machine('pf1')
        const pf3 = machine('pf3')
        pf3.report.result = 'failed'
        const looks = new Map<LookedAtMachine, Looked>([[pf1, await lookAt(pf1, t, opts)]])
        return { pf1, machines: [pf1, pf3], looks }
      })
    )
    expect(jobs.map(j => j.pf1.report.result)).toEqual(['deployed', 'deployed'])
    for (const j of jobs) await rollBackDeployed(j.machines, j.looks, opts, visit)
    expect([t.current, t.profile]).toEqual([OLD, OLD])
    expect(jobs[0].pf1.report.result).toBe('rolled-back')
    // The second: not deployed -- read again, it says rollback-fleet put it back (once, no warning
    // that it was left as it is).
    expect(jobs[1].pf1.report).toMatchObject({ result: 'failed', shardOutcome: 'rolled-back' })
    expect(jobs[1].pf1.report.error?.message).toMatch(/rollback-fleet put it back/)
    expect(jobs[1].pf1.report.warnings.join('\n')).not.toMatch(/left as it is/)
  })
})

import { formatPlanRecord, PlanRecord, planStamp, shardOutcome } from '../../src/target/plan-record'
import { parseRemoteState } from '../../src/target/remote-state'
import { LookedAtMachine, recordedBefore, undoOf } from '../../src/fleet-report'

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

  it('the way back is only a deployed record without a reboot', () => {
    expect(recordedBefore(deployed)).toMatchObject({
      current: OLD,
      profile: OLD,
      profileLink: 'system-4-link'
    })
    expect(recordedBefore({ ...deployed, rebooted: true })).toBeUndefined()
    expect(recordedBefore({ ...deployed, state: 'started' })).toBeUndefined()
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
  const machine = { name: 'pf1', planned: NEW, shard: '2' } as LookedAtMachine
  const rollback = {
    settings: {
      activationTimeoutSeconds: 60,
      confirmTimeoutSeconds: 60,
      healthTimeoutSeconds: 10,
      connectTimeoutSeconds: 10,
      magicRollback: false,
      healthChecks: []
    },
    lockTimeoutSeconds: 30,
    why: 'pf3 failed'
  }
  const undo = (r: PlanRecord | undefined) => undoOf(machine, r, PLAN, rollback)

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
})

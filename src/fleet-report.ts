/**
 * mode report, a fleet's last job (issue #35): reads what every machine of the deploy plan runs,
 * and the record its shard left there (src/target/plan-record.ts), `parallel` at a time through
 * one jump connection. A machine runs the plan's system (deployed) or it does not, and then its
 * record says why: its shard failed on it, rolled it back, stopped while deploying it (cancelled,
 * its runner lost), deployed it but it changed since, or never reached it. With rollback-fleet,
 * when one does not run it, the machines this plan's shards deployed go back to what they ran
 * before, each under its deploy lock, as one job's rollback-fleet does (src/fleet.ts).
 */
import { ActivationSettings } from './deploy/activate'
import { DeployMode, goalOf, verifyProblems } from './deploy/goal'
import { UndoRecord } from './deploy/revert'
import { ActionError } from './errors'
import { FleetOptions, MachineReach, revertMachine, Visit, visitMachine, withSharedJump } from './fleet'
import { machineLog } from './log/untrusted'
import { DeployReport, failedResult, ShardOutcome } from './report/report'
import { inParallel } from './rollout'
import { PlanRecord, shardOutcome } from './target/plan-record'
import { DeployLock } from './target/lock/runner'
import { generationOf, RemoteState } from './target/remote-state'
import { Target } from './target/target'

/** mode report: one machine of a deploy plan, and what the plan has for it. */
export interface LookedAtMachine {
  name: string
  report: DeployReport
  reach: MachineReach
  /** The plan's system for it. */
  planned: string
  /** The plan's shard it is in. */
  shard: string
}

export interface FleetLook {
  parallel: number
  connect: FleetOptions['connect']
  /** The deploy plan's id: only the records of its own shards count. */
  planId: string
  /** rollback-fleet: how the deployed machines go back (this job's timeouts). */
  rollback?: { settings: ActivationSettings; lockTimeoutSeconds: number }
  /** How long to wait for a deploy of the plan that has not ended on a machine (lock-timeout). */
  lockTimeoutSeconds: number
}

/** What the report job learned of a machine that runs the plan's system. */
export interface Looked {
  record: PlanRecord | undefined
  /** Read again once no deploy held its lock: a started record's deploy, which did not record its end. */
  settled?: RemoteState
}

export async function lookAtFleet(machines: LookedAtMachine[], opts: FleetLook): Promise<void> {
  const several = machines.length > 1
  // The planned path, also for a machine that cannot be reached: what it should run.
  for (const m of machines) Object.assign(m.report, { storePath: m.planned, shard: m.shard })
  const looks = new Map<LookedAtMachine, Looked>()
  await withSharedJump(
    machines.map(m => m.reach),
    opts.connect,
    async shared => {
      const visit: Visit<LookedAtMachine> = (m, fn) =>
        visitMachine(m, m.reach, several, shared, opts.connect, fn)
      await inParallel(machines, opts.parallel, m =>
        visit(m, async target => {
          looks.set(m, await lookAt(m, target, opts))
        })
      )
      await rollBackDeployed(machines, looks, opts, visit)
    }
  )
}

/**
 * rollback-fleet, once every machine was looked at: when one does not run the plan's system, the
 * ones that do go back, each from what its record said. (Exported for the unit tests.)
 */
export async function rollBackDeployed(
  machines: LookedAtMachine[],
  looks: Map<LookedAtMachine, Looked>,
  opts: FleetLook,
  visit: Visit<LookedAtMachine>
): Promise<void> {
  const failed = machines.filter(m => failedResult(m.report)).map(m => m.name)
  const { rollback } = opts
  if (!rollback || failed.length === 0) return
  const why = `rollback-fleet in the report job: another machine of the plan failed (${failed.join(', ')})`
  await inParallel(
    machines.filter(m => m.report.result === 'deployed'),
    opts.parallel,
    async m => {
      const { record, settled } = looks.get(m)!
      const undo = undoOf(m, record, opts.planId, { ...rollback, why }, settled)
      // Changed since it was read (another report job of the plan put it back first): what it
      // runs now is its result, not what was read before.
      const readAgain = async (target: Target): Promise<void> => {
        m.report.result = undefined
        await lookAt(m, target, opts)
      }
      if (typeof undo !== 'string') return revertMachine(m, undo, failed, visit, readAgain)
      machineLog(m.name, machines.length > 1, m.report.warnings).warning(
        `not rolled back (rollback-fleet): ${undo}`
      )
    }
  )
}

/**
 * What the machine runs; the plan record it holds (for rollback-fleet). Throws when it does not
 * run the plan's system. (Exported for the unit tests, over a FakeTarget.)
 */
export async function lookAt(m: LookedAtMachine, target: Target, opts: FleetLook): Promise<Looked> {
  let state = await target.readState()
  let settled: RemoteState | undefined
  // A deploy of this plan started here and did not record its end, and the machine runs the plan's
  // system: its activation agent may still be deciding (a shard job cancelled during its health
  // checks sends no confirmation, and the agent rolls back). Read again once the lock is free.
  if (runsPlanned(state, m) && startedHere(state.planRecord, opts.planId)) {
    target.log.info(
      `${target.label}: the deploy plan's deploy started here and has not recorded its end: reading it again once its deploy lock is free`
    )
    settled = state = await readWhenUnlocked(m, target, opts.lockTimeoutSeconds)
  }
  const record = state.planRecord
  // That deploy, once it ended, counts only as its mode leaves the machine: one whose agent's
  // rollback failed half-way (the profile back, not what runs) does not run the plan's system.
  const runs =
    settled && record && startedHere(record, opts.planId)
      ? verifyProblems(goalOf(record.mode as DeployMode), settled, m.planned).length === 0
      : runsPlanned(state, m) && !endedBadly(record, m, opts.planId)
  if (!runs) {
    const outcome = shardOutcome(opts.planId, record)
    m.report.shardOutcome = outcome
    throw notRunning(target.label, m, state, outcome, record, opts.rollback !== undefined)
  }
  m.report.result = 'deployed'
  m.report.shardOutcome = 'deployed'
  target.log.info(
    state.current === m.planned
      ? `${target.label} runs the deploy plan's ${m.planned}`
      : `${target.label} boots the deploy plan's ${m.planned} next (its system profile); it runs ${state.current ?? 'no system'} until then`
  )
  if (startedHere(record, opts.planId))
    m.report.warnings.push(
      "its shard's job stopped before recording how its deploy ended (cancelled, or its link lost); it runs (or boots next) the plan's system"
    )
  return { record, settled }
}

/** Whether it runs the plan's system (a shard in mode boot leaves it in the profile, to run after the next reboot). */
function runsPlanned(state: RemoteState, m: LookedAtMachine): boolean {
  return state.current === m.planned || state.profile === m.planned
}

/**
 * Its shard recorded that its deploy of the plan failed or rolled back, and nothing recorded since:
 * the shard's word stands, also where the plan's system was left on it (a rollback that failed
 * half-way: the profile back, the new system running) -- as one job's run would report it. A later
 * deploy of the plan that succeeds there (a re-run) records so.
 */
function endedBadly(record: PlanRecord | undefined, m: LookedAtMachine, planId: string): boolean {
  return (
    record?.plan === planId &&
    record.system === m.planned &&
    (record.state === 'failed' || (record.state === 'rolled-back' && !record.byRollbackFleet))
  )
}

function startedHere(record: PlanRecord | undefined, planId: string): boolean {
  return record?.plan === planId && record.state === 'started'
}

/** The state read under the machine's deploy lock: once a deploy that holds it has ended. */
async function readWhenUnlocked(
  m: LookedAtMachine,
  target: Target,
  timeoutSeconds: number
): Promise<RemoteState> {
  const lock = await DeployLock.acquire(target, timeoutSeconds).catch((e: unknown) => {
    if (!(e instanceof ActionError)) throw e
    // Not known to be deployed: its shard's deploy stopped before it ended (as far as its record tells).
    m.report.shardOutcome = 'stopped'
    throw new ActionError(
      `${target.label} runs the deploy plan's system, but its deploy has not ended: ${e.message}`,
      `Its activation agent may still roll it back. Run this job again once that deploy has ended (or raise lock-timeout).`,
      'verify'
    )
  })
  try {
    return await target.readState()
  } finally {
    await lock.release()
  }
}

/** Why a machine does not run the plan's system, as its shard's record tells it. */
function notRunning(
  label: string,
  m: LookedAtMachine,
  state: RemoteState,
  outcome: ShardOutcome,
  record: PlanRecord | undefined,
  rollbackFleet: boolean
): ActionError {
  const { current } = state
  const hasPlanned = runsPlanned(state, m)
  const runs = hasPlanned
    ? `${label} is left with the deploy plan's ${m.planned} (${current === m.planned ? 'it runs it' : 'its profile'}) by a deploy that did not succeed`
    : `${label} runs ${current ?? 'no system'}, not the deploy plan's ${m.planned}`
  const shard = `shard ${m.shard}${record?.run ? ` (run ${record.run})` : ''}`
  // With rollback-fleet, this job puts the other shards' machines back: re-running the failed
  // jobs alone would deploy this one and put it back again, run after run.
  const rerun = rollbackFleet
    ? `re-run every job of the plan (Re-run all jobs): rollback-fleet put the other shards' machines back, so re-running only the failed jobs would end the same way.`
    : `re-run shard ${m.shard}'s job (Re-run failed jobs), then this one.`
  const why = record?.message ?? 'no reason recorded'
  const [message, hint] = {
    failed: [
      `${shard} failed on it: ${why}`,
      `Fix what failed (that job's log has the whole error), then ${rerun}`
    ],
    'rolled-back': record?.byRollbackFleet
      ? [
          `${shard} deployed it, and rollback-fleet put it back (${why})`,
          `It runs what it ran before the plan. Fix what failed on the other machines, then re-run the plan's shard jobs and this one.`
        ]
      : [
          `${shard} deployed it and rolled it back: ${why}`,
          `Fix what failed (that job's log has the whole error), then ${rerun}`
        ],
    stopped: [
      `${shard}'s job stopped while deploying it (cancelled, or its runner was lost)`,
      `The target keeps a working generation (its activation agent rolls back by itself when no confirmation comes): ${rerun}`
    ],
    'moved-on': [
      `${shard} deployed it, but it changed since (another deploy, or by hand)`,
      `Find what changed it; to deploy the plan again, ${rerun}`
    ],
    'not-reached': [
      `no job of this plan got to it (shard ${m.shard}'s job failed before it, was cancelled, or did not run)`,
      `Look at that job, then ${rerun}`
    ]
  }[outcome]
  // Left with the plan's system by a deploy that failed: a re-run of the plan finds it there and
  // changes nothing (its failure stands), so the way on is another plan, or the machine put back.
  const left =
    hasPlanned && (outcome === 'failed' || outcome === 'rolled-back')
      ? `Fix what failed (its shard's log has the whole error) and deploy a new plan: a re-run of this one finds its system there and changes nothing. Or put it back by hand (nixos-rebuild switch --rollback).`
      : hint
  return new ActionError(`${runs}: ${message}`, left.charAt(0).toUpperCase() + left.slice(1), 'verify')
}

/** The modes whose deploy an activation undoes (dry-activate changes nothing). */
const UNDONE_MODES: readonly string[] = ['switch', 'boot', 'test']

/** How rollback-fleet puts a deployed machine back, from its shard's record; or why it does not. */
export function undoOf(
  m: LookedAtMachine,
  record: PlanRecord | undefined,
  planId: string,
  rollback: NonNullable<FleetLook['rollback']> & { why: string },
  settled?: RemoteState
): UndoRecord | string {
  if (record?.plan !== planId || record.system !== m.planned)
    return "no shard of this plan changed it (it ran the plan's system before)"
  if (record.rebooted) return 'it rebooted into the new system'
  // A started record, read again under the lock once its deploy ended (settled): the deploy
  // activated and was confirmed, and stopped before it recorded so (its job cancelled, its link lost).
  const started = record.state === 'started'
  // Booted into the plan's system since (a reboot's deploy stopped after its trial): not undone.
  if (started && settled?.booted?.system === m.planned) return 'it rebooted into the new system'
  const before = started && !settled ? undefined : recordedBefore(record)
  if (!before || !UNDONE_MODES.includes(record.mode))
    return 'its shard left no way back on it (its plan record)'
  const goal = goalOf(record.mode as DeployMode)
  // The generation it made (for a started record: the one the profile holds now, which has the
  // plan's system) is how a later deploy is told apart (movedOn): without it, not undone.
  const generation = !started
    ? record.generation
    : settled?.profile === m.planned
      ? generationOf(settled.profileLink)
      : undefined
  if (goal.setsProfile && generation === undefined)
    return 'its shard left no way back on it (no generation in its plan record)'
  return {
    toplevel: record.system,
    goal,
    before,
    generation,
    // Not known of a started record: the generation is then kept (only the profile goes back).
    createdNew: started ? false : (record.createdNew ?? false),
    settings: rollback.settings,
    lockTimeoutSeconds: rollback.lockTimeoutSeconds,
    // A later report finds it rolled back, and why, not "changed since".
    recordWhenBack: { ...record, state: 'rolled-back', message: rollback.why, byRollbackFleet: true }
  }
}

/** The "before" of a deployed (or started) record, as the state a fleet rollback goes back to (undefined: none to go back to). */
export function recordedBefore(r: PlanRecord): RemoteState | undefined {
  if ((r.state !== 'deployed' && r.state !== 'started') || r.rebooted || r.beforeCurrent === undefined)
    return undefined
  return {
    current: r.beforeCurrent,
    profile: r.beforeProfile,
    profileLink: r.beforeGeneration === undefined ? undefined : `system-${r.beforeGeneration}-link`,
    hasNixStore: true,
    bootFiles: []
  }
}

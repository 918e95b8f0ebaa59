/**
 * What a fleet does to a machine after every machine has a result (rollback-fleet): undo this
 * run's finished deploy on it when another machine failed, or prune its old generations once
 * nothing can need them any more. Each is a new visit: the machine's deploy lock taken again, and
 * its state read under it before anything changes.
 */
import { ActionError, errorMessage } from '../errors'
import type { PlanRecord } from '../target/plan-record'
import { generationOf, RemoteState } from '../target/remote-state'
import { Target } from '../target/target'
import { ActivationSettings, revertActivation } from './activate'
import { pruneGenerations } from './prune'
import { Goal, verifyProblems } from './goal'
import { DeployLock } from '../target/lock/runner'
import type { LockRequest } from '../target/lock/on-target'

/** What undoing one machine's finished deploy needs, recorded by the deploy when it activated. */
export interface UndoRecord {
  toplevel: string
  goal: Goal
  /** The target's state before the deploy: what it goes back to. */
  before: RemoteState
  /** The profile generation the activation made or reused (switch, boot), and whether it made it. */
  generation?: number
  createdNew: boolean
  settings: ActivationSettings
  lockTimeoutSeconds: number
  /** A deploy plan's machine: the record rollback-fleet leaves once it is back, under the lock. */
  recordWhenBack?: PlanRecord
  /**
   * A deploy that failed after its activation: its own lock, which its lost link may not have let
   * it release. Released first, so the rollback does not wait out that lease (its finished agent,
   * releasing it later, then finds it not held).
   */
  leftLock?: LockRequest
}

/** What a fleet rollback came to on one machine. */
export type RevertOutcome =
  | { kind: 'reverted'; to: string | undefined }
  /** It no longer runs this run's system (another deploy came after): left as it is. */
  | { kind: 'moved-on'; now: string }

/**
 * Puts a machine this run deployed back on what it ran before, as a single machine's rollback
 * does (agent.sh's rollback: the profile generation restored, the one this run made deleted, the
 * previous system activated), under its deploy lock and only while it still runs what this run
 * deployed: another deploy that came after is never undone. Throws an ActionError saying what the
 * target runs when putting it back failed.
 */
export async function revertDeploy(target: Target, undo: UndoRecord): Promise<RevertOutcome> {
  if (undo.leftLock) await target.lock('release', undo.leftLock).catch(() => undefined)
  const lock = await DeployLock.acquire(target, undo.lockTimeoutSeconds)
  let agentKeepsLock = false
  try {
    const now = await target.readState()
    const moved = movedOn(undo, now)
    if (moved !== undefined) {
      // The fleet records it as the machine's warning (src/fleet.ts revertMachine).
      target.log.info(
        `not rolled back: ${target.label} does not run what this run deployed (${moved}); left as it is`
      )
      return { kind: 'moved-on', now: moved }
    }
    const agent = { started: false, finished: false }
    const run = { ...undo, target, lock: lock.request, agent }
    const { outcome, log } = await revertActivation(run, undo).finally(() => {
      agentKeepsLock = agent.started && !agent.finished
    })
    if (outcome === 'rolled-back') {
      if (undo.recordWhenBack) await leavePlanRecord(target, undo.recordWhenBack, lock.request)
      return { kind: 'reverted', to: undo.before.current }
    }
    throw new ActionError(
      `rolling ${target.label} back to ${undo.before.current ?? 'what it ran'} (rollback-fleet) failed: ${outcome ?? 'no outcome'}`,
      `It may be in a mixed state: check /run/current-system and /nix/var/nix/profiles/system on it and activate a known-good generation by hand (it ran ${undo.before.current ?? 'nothing'} before this run, profile ${undo.before.profile ?? 'none'}).`,
      'activate',
      log.slice(-4000)
    )
  } finally {
    // An agent still rolling back renews the lock itself and releases it when done.
    if (agentKeepsLock) lock.stopRenewing()
    else await lock.release()
  }
}

/**
 * Writes a deploy plan record where what it tells is already done (a failure, a rollback): best
 * effort, the target may be gone; a record it could not write is said, not an error.
 */
export async function leavePlanRecord(
  target: Target,
  record: PlanRecord,
  lock: LockRequest,
  timeoutMs?: number
): Promise<void> {
  await target
    .writePlanRecord(record, lock, timeoutMs)
    .catch((e: unknown) =>
      target.log.info(`The deploy plan record on ${target.label} could not be written: ${errorMessage(e)}`)
    )
}

/** Why the target no longer counts as running this run's system (undefined: it still does). */
export function movedOn(undo: UndoRecord, now: RemoteState): string | undefined {
  const problems = verifyProblems(undo.goal, now, undo.toplevel)
  if (problems.length > 0) return problems.join(', ')
  // A deploy that left what runs as it was (boot): a machine running something else since has booted.
  if (!undo.goal.changesRunningSystem && now.current !== undo.before.current)
    return `it runs ${now.current ?? 'no system'} now (it booted since)`
  const generation = generationOf(now.profileLink)
  if (undo.goal.setsProfile && undo.generation !== undefined && generation !== undo.generation)
    return `it has system generation ${generation ?? '(none)'}, not ${undo.generation}`
  return undefined
}

/**
 * keep-generations, deferred until the fleet has a result (with rollback-fleet, the previous
 * generation must exist until then). Under the lock, so it never races another deploy; skipped,
 * with a warning, when another deploy holds it.
 */
export async function pruneAfterFleet(target: Target, keep: number): Promise<number[]> {
  const lock = await DeployLock.acquire(target, 0).catch((e: unknown) => {
    if (!(e instanceof ActionError)) throw e
    target.log.warning(`old generations not pruned: ${e.message}`)
    return undefined
  })
  if (!lock) return []
  try {
    const now = await target.readState()
    return await pruneGenerations(target, keep, generationOf(now.profileLink))
  } finally {
    await lock.release()
  }
}

import { randomBytes } from 'crypto'
import { ActionError } from '../errors'
import { AgentDied, Follower } from '../target/agent/follower'
import { AgentState } from '../target/agent/outcome'
import { AgentRequest, AgentSession, AgentStartUnanswered } from '../target/agent/session'
import { LockRequest } from '../target/lock/on-target'
import { lostLockError } from '../target/lock/runner'
import { RemoteState } from '../target/remote-state'
import { Target } from '../target/target'
import { Goal } from './goal'
import { runHealthChecks } from './health-checks'

/** No confirmation within this long of the run's deadline: the decision command alone may take 10 s. */
export const CONFIRM_MARGIN_MS = 10_000
/**
 * And, for a switch, this much more: once confirmed, the agent makes the system the boot default
 * (the profile, switch-to-configuration boot: a kernel and initrd copied to a Pi's SD card), which
 * the run waits for. A run that ended meanwhile would report a failure the target did not have.
 */
export const BOOT_ENTRY_MARGIN_MS = 60_000
export const RUN_DIR_BASE = '/run/nix-deploy-action'

/** The deploy failed but the target is back on what it ran before. */
export class RolledBackError extends ActionError {
  constructor(
    message: string,
    hint: string,
    readonly rolledBackTo: string | undefined,
    details?: string
  ) {
    super(message, hint, 'activate', details)
  }
}

export interface ActivationSettings {
  activationTimeoutSeconds: number
  confirmTimeoutSeconds: number
  healthTimeoutSeconds: number
  connectTimeoutSeconds: number
  /** Whether the target must hear a confirmation over a new connection, or roll back by itself. */
  magicRollback: boolean
  healthChecks: string[]
  /** When the `timeout` input ends the whole run (epoch ms), if set. */
  runDeadline?: number
}

export interface ActivationOutcome {
  /** The agent's final word: done, confirmed, unconfirmed-kept. */
  outcome: string
  generation?: number
  /** Whether that generation is one the agent made (not one nix-env reused): a fleet rollback deletes it. */
  createdNew?: boolean
  /** What the agent logged (switch-to-configuration's output included): its tail. */
  log: string
  healthChecks?: string
  confirmedOverNewConnection: boolean
}

/**
 * Whether the agent on the target may still act: started, and no final outcome seen yet. While it
 * may, the deploy lock is the agent's to keep (it renews it) and the action must not release it.
 */
export interface AgentTracker {
  /** The agent now in charge (another one once a dead agent's rollback started). */
  session?: AgentSession
  started: boolean
  finished: boolean
  /** The caller removes the finished agent's directory itself, in its last command (Target.wrapUp). */
  leaveDir?: boolean
  /** The finished agent's directory, left to the caller, is still there (its last command failed). */
  dirLeft?: boolean
}

/** A fresh directory for one activation agent under RUN_DIR_BASE. */
function newAgentDir(): string {
  return `${RUN_DIR_BASE}/${randomBytes(6).toString('hex')}`
}

/** Long enough for what an agent does after it decides: a confirmed switch's boot entry, a rollback. */
function rollbackAllowanceMs(settings: ActivationSettings): number {
  // At worst three switches: the confirmed system's boot entry, then the rollback's re-activation and
  // boot entry when that failed; each given at least ROLLBACK_MIN_SECONDS (agent.sh).
  return (3 * Math.max(settings.activationTimeoutSeconds, ROLLBACK_MIN_SECONDS) + 60) * 1000
}

/** agent.sh's ROLLBACK_MIN_SECONDS: a unit test checks they agree. */
export const ROLLBACK_MIN_SECONDS = 120

/**
 * Long enough for the health checks and then the confirmation's new connection (both hops, at
 * worst): how long the agent waits for a decision after checks, and the least confirm-timeout
 * worked out when it is not given (inputs.ts).
 */
export function checksWindowSeconds(t: {
  healthTimeoutSeconds: number
  connectTimeoutSeconds: number
}): number {
  return t.healthTimeoutSeconds + 2 * t.connectTimeoutSeconds + 30
}

/** How long the agent waits for a decision: confirm-timeout (magic rollback), or long enough for the checks. */
function agentWaitSeconds(s: ActivationSettings): number {
  if (s.magicRollback) return s.confirmTimeoutSeconds
  return s.healthChecks.length > 0 ? checksWindowSeconds(s) : 0
}

/**
 * Runs the activation on the target through the detached agent (src/target/scripts/agent.sh) and
 * follows it to its end, reconnecting when the connection drops. With health checks and magic
 * rollback, runs the checks, then confirms over a brand-new connection to the target (a new TCP
 * connection from the jump host, a new SSH handshake and login; the jump host's connection is kept
 * while it is up, as the deploy does not change it): if the new system broke SSH or the network,
 * that fails, and the target rolls itself back when confirm-timeout passes.
 */
export async function activate(
  target: Target,
  goal: Goal,
  settings: ActivationSettings,
  toplevel: string,
  before: RemoteState,
  lock: LockRequest | undefined,
  agent: AgentTracker = { started: false, finished: false }
): Promise<ActivationOutcome> {
  const run: ActivationRun = { target, goal, settings, toplevel, before, lock, agent }
  const waitSeconds = agentWaitSeconds(settings)
  const follower = await startAgent(run, {
    waitSeconds,
    onTimeout: settings.magicRollback ? 'rollback' : 'keep'
  })
  const { session } = follower
  // A finished agent waits for its directory to go before it leaves the lock to the action: removed
  // here whatever the outcome, unless it succeeded and the caller removes it (agent.leaveDir).
  let leftToCaller = false
  try {
    let decided: Decided
    try {
      decided = await followAndDecide(run, follower, waitSeconds)
    } catch (e) {
      if (!(e instanceof AgentDied)) throw e
      return await afterDeadAgent(run, follower, e)
    }
    const outcome = finish(
      follower.state,
      goal.mode,
      before,
      toplevel,
      target.label,
      follower.log,
      decided.healthReport,
      {
        confirmedOverNewConnection: decided.confirmed,
        createdNew: follower.createdNew
      }
    )
    leftToCaller = agent.leaveDir === true
    agent.dirLeft = leftToCaller
    return outcome
  } finally {
    // (afterDeadAgent removes the directories of the agents it dealt with: agent.session is another's then.)
    if (agent.finished && !leftToCaller && agent.session === session) await session.remove()
  }
}

/**
 * Starts an agent in a fresh directory for `run` and a Follower of it; the agent is then the
 * tracker's (agent.session). Fails when this run no longer holds the lock.
 */
async function startAgent(
  { target, goal, settings, toplevel, before, lock, agent }: ActivationRun,
  req: Pick<AgentRequest, 'waitSeconds' | 'onTimeout' | 'rollbackOf'>
): Promise<Follower> {
  Object.assign(agent, { session: undefined, finished: false, dirLeft: false })
  let session: Awaited<ReturnType<Target['startAgent']>>
  try {
    session = await target.startAgent({
      dir: newAgentDir(),
      toplevel,
      action: goal.mode,
      activationTimeoutSeconds: settings.activationTimeoutSeconds,
      before,
      lock,
      ...req
    })
  } catch (e) {
    // It may run: the lock is handed to it at the end (abandon), not released under it.
    if (e instanceof AgentStartUnanswered) Object.assign(agent, { session: e.session, started: true })
    throw e
  }
  if (session === 'lost-lock') throw lostLockError(target.label)
  Object.assign(agent, { session, started: true })
  return new Follower(session, target.log, agent)
}

/**
 * Follows the activation to its exit status, then, when the agent waits for a decision, decides
 * (checks, confirmation) and follows the agent to its outcome. Throws when the action aborted and
 * the agent rolled back.
 */
async function followAndDecide(
  run: ActivationRun,
  follower: Follower,
  waitSeconds: number
): Promise<Decided> {
  const { target, goal, settings, toplevel } = run
  await followActivation(target, goal, settings, follower, waitSeconds)
  const state = follower.state
  if (!(state.status === 0 && waitSeconds > 0 && state.outcome === undefined)) return { confirmed: false }
  const marginMs = CONFIRM_MARGIN_MS + (goal.mode === 'switch' ? BOOT_ENTRY_MARGIN_MS : 0)
  const decided = await decideAndFollow(target, settings, follower, waitSeconds, toplevel, marginMs)
  if (decided.abort) abortedOutcome(run, follower, decided.abort, decided.healthReport)
  return decided
}

/**
 * The run decided to abort (a health check failed, the run's timeout was near): it fails whatever
 * the agent did, naming that cause. An abort that reached the agent after its window (a link down,
 * then back) leaves the outcome of that window: rolled back unconfirmed, or, with magic rollback
 * off, the new system kept, which must not end as a green deploy.
 */
function abortedOutcome(
  { target, toplevel, before }: ActivationRun,
  follower: Follower,
  abort: NonNullable<Decided['abort']>,
  healthReport: string | undefined
): void {
  const details = [healthReport, follower.log.slice(-4000)].filter(Boolean).join('\n\n')
  const outcome = follower.state.outcome
  if (outcome === 'rolled-back' || outcome === 'rolled-back-unconfirmed' || outcome === 'boot-entry-failed')
    throw new RolledBackError(
      `${abort.reason}; rolled back to ${before.current}`,
      abort.hint,
      before.current,
      details
    )
  if (outcome === 'unconfirmed-kept')
    throw new ActionError(
      `${abort.reason}; the abort did not reach ${target.label} within its window, and without magic rollback it keeps ${toplevel}`,
      `${target.label} runs the new system. ${abort.hint} To go back now, deploy the previous configuration or run \`nixos-rebuild switch --rollback\` on it.`,
      'verify',
      details
    )
}

/** What one activation works with (activate's arguments), handed on as one. */
export interface ActivationRun {
  target: Target
  goal: Goal
  settings: ActivationSettings
  toplevel: string
  before: RemoteState
  lock: LockRequest | undefined
  agent: AgentTracker
}

/**
 * The agent ended without an outcome (killed -- out of memory, by hand -- or gone with its
 * directory: the target rebooted): nothing on the target will finish or undo its work, and waiting
 * for activation-timeout would only delay that. Another agent puts the target back as it was (the
 * profile, the running system, the boot entry), from what the dead one had recorded.
 */
async function afterDeadAgent(
  { target, goal, settings, toplevel, before, lock, agent }: ActivationRun,
  dead: Follower,
  died: AgentDied
): Promise<never> {
  const why =
    died.how === 'dead'
      ? 'it was killed (out of memory, or by hand)'
      : 'its directory is gone with it (the target rebooted, or /run was emptied)'
  const what = `the activation agent on ${target.label} ended without an outcome: ${why}`
  if (goal.mode === 'dry-activate')
    throw new ActionError(
      `${what}`,
      'dry-activate changes nothing: deploy again.',
      'activate',
      dead.log.slice(-4000)
    )
  target.log.warning(`${what}; starting another to put the target back as it was`)
  const follower = await putBack(
    { target, goal, settings, toplevel, before, lock, agent },
    { generation: dead.generation, createdNew: dead.createdNew ?? false, dir: dead.dir },
    `Rollback on ${target.label}`
  )
  if (agent.finished) await dead.session.remove()
  const state = follower.state
  const details = [dead.log.slice(-3000), follower.log.slice(-3000)].filter(Boolean).join('\n\n')
  if (state.outcome === 'rolled-back')
    throw new RolledBackError(
      `${what}; the target was put back as it was (${before.current ?? 'nothing ran'})`,
      'Find what ended the agent (journalctl, dmesg for the OOM killer), then deploy again.',
      before.current,
      details
    )
  throw new ActionError(
    `${what}, and putting the target back failed too`,
    `Check /run/current-system and /nix/var/nix/profiles/system on it and activate a known-good generation by hand (before this deploy it ran ${before.current ?? 'nothing'}, profile ${before.profile ?? 'none'}).`,
    'activate',
    details
  )
}

/**
 * Starts an agent that only puts the target back as it was before the activation `undone` stands
 * for (the profile, the running system, the boot entry: agent.sh's rollback), and follows it to its
 * outcome.
 */
async function putBack(
  run: ActivationRun,
  undone: NonNullable<AgentRequest['rollbackOf']>,
  title: string
): Promise<Follower> {
  const { target, settings, agent } = run
  const follower = await startAgent(run, { waitSeconds: 0, onTimeout: 'rollback', rollbackOf: undone })
  await target.log.group(title, () =>
    follower.until(s => s.outcome !== undefined, Date.now() + rollbackAllowanceMs(settings))
  )
  if (agent.finished) await follower.session.remove()
  return follower
}

/**
 * Undoes a finished activation of this run (rollback-fleet: another machine of the fleet failed):
 * the generation it made (deleted when it was new), back to what ran before. The caller holds the
 * lock and has checked the target still runs `toplevel`. The agent's outcome and its log.
 */
export async function revertActivation(
  run: ActivationRun,
  made: { generation?: number; createdNew: boolean }
): Promise<{ outcome: string | undefined; log: string }> {
  const follower = await putBack(
    run,
    { generation: made.generation, createdNew: made.createdNew, dir: '' },
    `Rollback on ${run.target.label} (rollback-fleet)`
  )
  return { outcome: follower.state.outcome, log: follower.log }
}

/** Follows switch-to-configuration to its exit status (and, when nothing is to be decided, to the outcome). */
async function followActivation(
  target: Target,
  goal: Goal,
  settings: ActivationSettings,
  follower: Follower,
  waitSeconds: number
): Promise<void> {
  const activationDeadline = Date.now() + (settings.activationTimeoutSeconds + 60) * 1000
  await target.log.group(`switch-to-configuration ${goal.mode} on ${target.label}`, async () => {
    const s = await follower.until(s => s.status !== undefined || s.outcome !== undefined, activationDeadline)
    if (s.status === undefined && s.outcome === undefined)
      throw new ActionError(
        `the activation on ${target.label} did not finish within activation-timeout (${settings.activationTimeoutSeconds} s), or the target could not be reached to see it finish`,
        'While its activation agent runs, the target rolls back by itself when activation times out, and keeps the deploy lock until it has; a target that rebooted meanwhile (a power cut) runs its boot default, which may be the new system. Check it (readlink /run/current-system) and the activation log above.',
        'activate',
        follower.log.slice(-4000)
      )
    if (s.status !== 0 || waitSeconds === 0)
      await follower.until(s => s.outcome !== undefined, Date.now() + rollbackAllowanceMs(settings))
  })
}

interface Decided {
  healthReport?: string
  confirmed: boolean
  /** Set when the action told the target to roll back. */
  abort?: { reason: string; hint: string }
}

/** Runs the health checks, sends the decision (a confirmation over a new connection), follows the result. */
async function decideAndFollow(
  target: Target,
  settings: ActivationSettings,
  follower: Follower,
  waitSeconds: number,
  toplevel: string,
  marginMs: number
): Promise<Decided> {
  const agentDeadline = Date.now() + waitSeconds * 1000
  let abort: Decided['abort']
  let healthReport: string | undefined
  if (settings.healthChecks.length > 0) {
    const health = await runHealthChecks(target, settings.healthChecks, settings.healthTimeoutSeconds)
    healthReport = health.report
    if (!health.ok)
      abort = {
        reason: `a health check failed on ${target.label} after activating ${toplevel}`,
        hint: 'Fix what the check found (its output is in the summary), then deploy again.'
      }
  }
  // The run's `timeout` is about to end it: a confirmation sent now could be accepted after the
  // step has failed, leaving the target on a system the run reported as not deployed. Abort
  // instead: the target rolls back now, as the failure says.
  const runEnding = (): Decided['abort'] => {
    if (settings.runDeadline === undefined || Date.now() <= settings.runDeadline - marginMs) return undefined
    const late = {
      reason: `the run's timeout was about to pass before ${toplevel} could be confirmed on ${target.label}`,
      hint: 'Raise timeout: it must leave room for the activation and the confirmation (and, for a switch, a minute for the boot entry after it).'
    }
    target.log.warning(`${late.reason}: not confirming it; the target rolls back now`)
    return late
  }
  abort ??= runEnding()
  // Looked at again once the confirmation's new connection is up (dialling it may take connect-timeout).
  const sent = await sendDecision(target, follower, abort ? 'abort' : 'confirm', agentDeadline, runEnding)
  const confirmed = sent === true
  if (typeof sent === 'object') abort = sent
  await target.log.group(`Result of the deploy on ${target.label}`, () =>
    follower.until(
      s => s.outcome !== undefined,
      Math.max(agentDeadline, Date.now()) + rollbackAllowanceMs(settings)
    )
  )
  return { healthReport, confirmed, abort }
}

/**
 * Sends the decision until the agent's deadline; a confirmation goes over a new connection, proof
 * that the new system still lets us in. True when a confirmation was the decision that counted.
 */
async function sendDecision(
  target: Target,
  follower: Follower,
  decision: 'confirm' | 'abort',
  agentDeadline: number,
  runEnding: () => Decided['abort'] = () => undefined
): Promise<boolean | NonNullable<Decided['abort']>> {
  for (;;) {
    try {
      if (decision === 'confirm') {
        target.log.info(`Confirming over a new connection to ${target.label}`)
        await target.reconnectToConfirm()
        const late = runEnding()
        if (late) {
          await follower.decide('abort')
          return late
        }
      }
      const answer = await follower.decide(decision)
      return decision === 'confirm' && answer === 'won'
    } catch (e) {
      if (!(e instanceof ActionError)) throw e
      if (Date.now() >= agentDeadline) {
        target.log.warning(
          `Could not reach ${target.label} to ${decision} the deploy within confirm-timeout: ${e.message}`
        )
        return false
      }
      await new Promise(res => setTimeout(res, 2000))
    }
  }
}

/** The agent's outcome as the deploy's result, or the error that says what happened and what to do. */
function finish(
  state: AgentState,
  action: string,
  before: RemoteState,
  toplevel: string,
  label: string,
  log: string,
  healthChecks: string | undefined,
  extra: { confirmedOverNewConnection: boolean; createdNew?: boolean }
): ActivationOutcome {
  const details = [healthChecks, log.slice(-4000)].filter(Boolean).join('\n\n')
  switch (state.outcome) {
    case 'done':
    case 'confirmed':
    case 'unconfirmed-kept':
      return {
        outcome: state.outcome,
        generation: state.generation,
        createdNew: extra.createdNew,
        log,
        healthChecks,
        confirmedOverNewConnection: extra.confirmedOverNewConnection
      }
    case 'rolled-back':
      throw new RolledBackError(
        `switch-to-configuration ${action} failed on ${label} (exit ${state.status}); rolled back to ${before.current}`,
        'Fix the configuration (the activation output is in the log and the summary) and deploy again.',
        before.current,
        details
      )
    case 'boot-entry-failed':
      throw new RolledBackError(
        `${label} ran ${toplevel} and kept it, but making it the boot default failed (the system profile, or switch-to-configuration boot), so the target rolled back to ${before.current}: what runs is what boots`,
        "Usually /boot is full (a Pi's firmware partition keeps a kernel and initrd per generation): see the log, free space (keep-generations, or nix-collect-garbage -d and then nixos-rebuild boot on it), then deploy again.",
        before.current,
        details
      )
    case 'rolled-back-unconfirmed':
      throw new RolledBackError(
        `${label} activated ${toplevel} but the action could not confirm it over a new connection within confirm-timeout, so the target rolled back to ${before.current} by itself`,
        'The new system probably broke SSH or the network (check its firewall, network and sshd settings), then deploy again.',
        before.current,
        details
      )
    default:
      throw failureOf(state, action, before, toplevel, label, details)
  }
}

/** The errors for the outcomes that leave nothing deployed (and for an outcome never learnt). */
function failureOf(
  state: AgentState,
  action: string,
  before: RemoteState,
  toplevel: string,
  label: string,
  details: string
): ActionError {
  switch (state.outcome) {
    case 'failed':
      return new ActionError(
        `switch-to-configuration ${action} failed on ${label} (exit ${state.status})`,
        'See the activation output; nothing was changed.',
        'activate',
        details
      )
    case 'profile-failed':
      return new ActionError(
        `setting the system profile on ${label} failed`,
        'See the log: the target may be out of disk space or its Nix broken. Nothing was activated.',
        'activate',
        details
      )
    case 'rollback-failed':
      return new ActionError(
        `the deploy of ${toplevel} failed on ${label}, and rolling back failed too`,
        `The target may be in a mixed state: check /run/current-system and /nix/var/nix/profiles/system on it and activate a known-good generation by hand (before this deploy it ran ${before.current ?? 'nothing'}, profile ${before.profile ?? 'none'}).`,
        'activate',
        details
      )
    default:
      return new ActionError(
        `lost track of the activation on ${label}: its outcome is unknown`,
        `The target should roll back by itself if the activation failed or could not be confirmed, unless it rebooted meanwhile (then it runs its boot default, which may be the new system). Check /run/current-system on it (before this deploy it ran ${before.current ?? 'nothing'}).`,
        'activate',
        details
      )
  }
}

import { randomBytes } from 'crypto'
import { ActionError } from '../errors'
import { Plan } from '../plan'
import { Remote } from '../ssh/connection'
import { shellCommand } from '../ssh/quote'
import {
  ABANDON_SCRIPT,
  AGENT_SCRIPT,
  DECIDE_SCRIPT,
  FOLLOW_SCRIPT,
  PREPARE_AGENT_SCRIPT,
  PROBE_SCRIPT,
  START_AGENT_SCRIPT
} from '../target/scripts'
import { LockRequest } from './lock'
import { RemoteState, generationOf, parseRemoteState } from './remote-state'
import { TargetSession } from './session'

const STEP_TIMEOUT_MS = 120_000
const POLL_MS = 1_000
/** Each follow poll must answer quickly; one that does not means the link is gone. */
const POLL_TIMEOUT_MS = 10_000
/** No confirmation within this long of the run's deadline: the decision command alone may take POLL_TIMEOUT_MS. */
const CONFIRM_MARGIN_MS = POLL_TIMEOUT_MS
export const RUN_DIR_BASE = '/run/nix-deploy-action'
/** The activation log kept in memory (for the summary and dry-activate's units): its tail. */
const MAX_KEPT_LOG = 1 << 20
/** One follow poll returns at most this much of the agent's log; a longer backlog takes more polls. */
export const FOLLOW_CHUNK_BYTES = 256 * 1024

/**
 * Whether the agent on the target may still act: started, and no final outcome seen yet. While it
 * may, the deploy lock is the agent's to keep (it renews it) and the action must not release it.
 */
export interface AgentTracker {
  dir?: string
  started: boolean
  finished: boolean
}

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

export async function readRemoteState(host: Remote): Promise<RemoteState> {
  const r = await host.exec(shellCommand(['sh', '-c', PROBE_SCRIPT, 'sh']), {
    timeoutMs: STEP_TIMEOUT_MS,
    what: 'reading the system state'
  })
  if (r.exitCode !== 0)
    throw new ActionError(
      `reading the system state of the target failed (exit ${r.exitCode}): ${r.stderr.trim().slice(-300)}`,
      'The target must have a POSIX shell with readlink, id and df (any NixOS has). With sudo, check that `sudo -n true` works for target-user.',
      'connect'
    )
  return parseRemoteState(r.stdout)
}

export interface ActivationSettings {
  activationTimeoutSeconds: number
  confirmTimeoutSeconds: number
  healthTimeoutSeconds: number
  connectTimeoutSeconds: number
  /** When the `timeout` input ends the whole run (epoch ms), if set. */
  runDeadline?: number
}

export interface ActivationOutcome {
  /** The agent's final word: done, confirmed, unconfirmed-kept. */
  outcome: string
  generation?: number
  /** Everything the agent logged (switch-to-configuration's output included). */
  log: string
  healthChecks?: string
  confirmedOverNewConnection: boolean
}

interface AgentState {
  status?: number
  generation?: number
  outcome?: string
}

/** Parses FOLLOW_SCRIPT's stderr (key=value lines). */
export function parseAgentState(stderr: string): AgentState & { size: number } {
  const kv = new Map<string, string>()
  for (const l of stderr.split('\n')) {
    const m = /^(size|status|generation|outcome)=(.*)$/.exec(l.trim())
    if (m) kv.set(m[1], m[2].trim())
  }
  const num = (k: string): number | undefined => {
    const v = kv.get(k)
    return v && /^[0-9]+$/.test(v) ? Number(v) : undefined
  }
  const outcome = kv.get('outcome')
  return {
    size: num('size') ?? 0,
    status: num('status'),
    generation: num('generation'),
    outcome: outcome || undefined
  }
}

/**
 * Runs the activation on the target through the detached agent (see AGENT_SCRIPT) and follows it to
 * its end, reconnecting when the connection drops. With health checks and magic rollback, runs the
 * checks, then confirms over a brand-new connection (both hops dialled afresh): if the new system
 * broke SSH or the network, that fails, and the target rolls itself back when confirm-timeout passes.
 */
export async function activate(
  session: TargetSession,
  plan: Plan,
  settings: ActivationSettings,
  toplevel: string,
  before: RemoteState,
  lock: LockRequest | undefined,
  agent: AgentTracker = { started: false, finished: false }
): Promise<ActivationOutcome> {
  const log = session.log
  const id = randomBytes(6).toString('hex')
  const dir = `${RUN_DIR_BASE}/${id}`
  agent.dir = dir
  const waitSeconds = plan.magicRollback
    ? settings.confirmTimeoutSeconds
    : plan.healthChecks.length > 0
      ? settings.healthTimeoutSeconds + 2 * settings.connectTimeoutSeconds + 30
      : 0
  const onTimeout = plan.magicRollback ? 'rollback' : 'keep'

  const prep = await session.exec(shellCommand(['sh', '-c', PREPARE_AGENT_SCRIPT, 'sh', dir]), {
    stdin: AGENT_SCRIPT,
    timeoutMs: STEP_TIMEOUT_MS,
    what: 'writing the activation agent'
  })
  if (prep.exitCode !== 0)
    throw new ActionError(
      `could not prepare the activation on ${session.label}: ${prep.stderr.trim().slice(-300)}`,
      'The target user must be able to write /run (use root or sudo).',
      'activate'
    )

  const agentOptions = agentCommandOptions({
    dir,
    toplevel,
    action: plan.mode,
    activationTimeoutSeconds: settings.activationTimeoutSeconds,
    waitSeconds,
    onTimeout,
    before,
    lock
  })
  const started = await session.exec(shellCommand(['sh', '-c', START_AGENT_SCRIPT, 'sh', ...agentOptions]), {
    timeoutMs: STEP_TIMEOUT_MS,
    what: 'starting the activation agent'
  })
  if (started.exitCode === 0 && started.stdout.trim() === 'lost-lock')
    throw new ActionError(
      `this run lost the deploy lock on ${session.label} before activating: another deploy took it over after the lease ran out`,
      'Nothing was activated by this run. Check the link to the target (it was unreachable for longer than the lease), then re-run.',
      'activate'
    )
  if (started.exitCode !== 0 || !/started-/.test(started.stdout))
    throw new ActionError(
      `could not start the activation on ${session.label}: ${started.stderr.trim().slice(-300)}`,
      'Check that the target has setsid (util-linux) or systemd-run.',
      'activate'
    )
  agent.started = true
  log.info(`Activation agent started on ${session.label} (${started.stdout.trim()}, ${dir})`)

  let agentLog = ''
  let offset = 0
  let state: AgentState = {}
  const follow = async (until: (s: AgentState) => boolean, deadline: number): Promise<AgentState> => {
    for (;;) {
      const r = await session.execRetrying(
        shellCommand(['sh', '-c', FOLLOW_SCRIPT, 'sh', dir, String(offset), String(FOLLOW_CHUNK_BYTES)]),
        deadline,
        { timeoutMs: POLL_TIMEOUT_MS, what: 'following the activation log' }
      )
      const s = parseAgentState(r.stderr)
      const chunk = r.stdout
      if (chunk) {
        log.untrusted(chunk)
        agentLog = (agentLog + chunk).slice(-MAX_KEPT_LOG)
      }
      offset = Math.max(offset, Math.min(s.size, offset + Buffer.byteLength(chunk)))
      state = s
      if (s.outcome !== undefined) agent.finished = true
      const backlog = offset < s.size
      if (until(s) && !backlog) return s
      if (Date.now() >= deadline) return s
      if (!backlog) await new Promise(res => setTimeout(res, POLL_MS))
    }
  }

  const activationDeadline = Date.now() + (settings.activationTimeoutSeconds + 60) * 1000
  // Long enough for the agent's own rollback (two activations) after it decides.
  const rollbackAllowanceMs = (2 * settings.activationTimeoutSeconds + 60) * 1000
  await log.group(`switch-to-configuration ${plan.mode} on ${session.label}`, async () => {
    await follow(s => s.status !== undefined || s.outcome !== undefined, activationDeadline)
    if (state.status === undefined && state.outcome === undefined)
      throw new ActionError(
        `the activation on ${session.label} did not finish within activation-timeout (${settings.activationTimeoutSeconds} s), or the target could not be reached to see it finish`,
        'The target rolls back by itself when activation times out, and keeps the deploy lock until it has. Check it (readlink /run/current-system) and the activation log above.',
        'activate',
        agentLog.slice(-4000)
      )
    if (state.status !== 0 || waitSeconds === 0)
      await follow(s => s.outcome !== undefined, Date.now() + rollbackAllowanceMs)
  })

  let healthReport: string | undefined
  let confirmedOverNewConnection = false
  if (state.status === 0 && waitSeconds > 0 && state.outcome === undefined) {
    const agentDeadline = Date.now() + waitSeconds * 1000
    let decision: 'confirm' | 'abort' = 'confirm'
    let abortReason = ''
    let abortHint = ''
    if (plan.healthChecks.length > 0) {
      const health = await runHealthChecks(session, plan.healthChecks, settings.healthTimeoutSeconds)
      healthReport = health.report
      if (!health.ok) {
        decision = 'abort'
        abortReason = `a health check failed on ${session.label} after activating ${toplevel}`
        abortHint = 'Fix what the check found (its output is in the summary), then deploy again.'
      }
    }
    // The run's `timeout` is about to end it: a confirmation sent now could be accepted after the
    // step has failed, leaving the target on a system the run reported as not deployed. Abort
    // instead: the target rolls back now, as the failure says.
    if (
      decision === 'confirm' &&
      settings.runDeadline !== undefined &&
      Date.now() > settings.runDeadline - CONFIRM_MARGIN_MS
    ) {
      decision = 'abort'
      abortReason = `the run's timeout was about to pass before ${toplevel} could be confirmed on ${session.label}`
      abortHint = 'Raise timeout: it must leave room for the activation and the confirmation.'
      log.warning(`${abortReason}: not confirming it; the target rolls back now`)
    }
    // The confirmation goes over a new connection: proof that the new system still lets us in.
    let answer: string | undefined
    for (;;) {
      try {
        if (decision === 'confirm') {
          log.info(`Confirming over a new connection to ${session.label}`)
          await session.reconnect()
        }
        const r = await session.exec(shellCommand(['sh', '-c', DECIDE_SCRIPT, 'sh', dir, decision]), {
          timeoutMs: POLL_TIMEOUT_MS,
          what: `sending the ${decision === 'confirm' ? 'confirmation' : 'abort'}`
        })
        answer = r.stdout.trim()
        confirmedOverNewConnection = decision === 'confirm' && answer === 'won'
        break
      } catch (e) {
        if (!(e instanceof ActionError)) throw e
        if (Date.now() >= agentDeadline) {
          log.warning(
            `Could not reach ${session.label} to ${decision} the deploy within confirm-timeout: ${e.message}`
          )
          break
        }
        await new Promise(res => setTimeout(res, 2000))
      }
    }
    await log.group(`Result of the deploy on ${session.label}`, () =>
      follow(s => s.outcome !== undefined, Math.max(agentDeadline, Date.now()) + rollbackAllowanceMs)
    )
    if (decision === 'abort' && state.outcome === 'rolled-back')
      throw new RolledBackError(
        `${abortReason}; rolled back to ${before.current}`,
        abortHint,
        before.current,
        [healthReport, agentLog.slice(-4000)].filter(Boolean).join('\n\n')
      )
  }
  if (agent.finished)
    await session
      .exec(shellCommand(['rm', '-rf', dir]), {
        timeoutMs: 30_000,
        what: 'removing the activation directory'
      })
      .catch(() => undefined)
  return finish(
    state,
    plan.mode,
    before,
    toplevel,
    session.label,
    agentLog,
    healthReport,
    confirmedOverNewConnection
  )
}

function finish(
  state: AgentState,
  action: string,
  before: RemoteState,
  toplevel: string,
  label: string,
  log: string,
  healthChecks: string | undefined,
  confirmedOverNewConnection: boolean
): ActivationOutcome {
  const details = [healthChecks, log.slice(-4000)].filter(Boolean).join('\n\n')
  switch (state.outcome) {
    case 'done':
    case 'confirmed':
    case 'unconfirmed-kept':
      return {
        outcome: state.outcome,
        generation: state.generation,
        log,
        healthChecks,
        confirmedOverNewConnection
      }
    case 'rolled-back':
      throw new RolledBackError(
        `switch-to-configuration ${action} failed on ${label} (exit ${state.status}); rolled back to ${before.current}`,
        'Fix the configuration (the activation output is in the log and the summary) and deploy again.',
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
    case 'failed':
      throw new ActionError(
        `switch-to-configuration dry-activate failed on ${label} (exit ${state.status})`,
        'See the activation output; nothing was changed.',
        'activate',
        details
      )
    case 'profile-failed':
      throw new ActionError(
        `setting the system profile on ${label} failed`,
        'See the log: the target may be out of disk space or its Nix broken. Nothing was activated.',
        'activate',
        details
      )
    case 'rollback-failed':
      throw new ActionError(
        `the deploy of ${toplevel} failed on ${label}, and rolling back failed too`,
        `The target may be in a mixed state: check /run/current-system and /nix/var/nix/profiles/system on it and activate a known-good generation by hand (before this deploy it ran ${before.current ?? 'nothing'}, profile ${before.profile ?? 'none'}).`,
        'activate',
        details
      )
    default:
      throw new ActionError(
        `lost track of the activation on ${label}: its outcome is unknown`,
        `The target should roll back by itself if the activation failed or could not be confirmed. Check /run/current-system on it (before this deploy it ran ${before.current ?? 'nothing'}).`,
        'activate',
        details
      )
  }
}

/** Runs every check on the target until all pass at once or health-timeout passes. */
export async function runHealthChecks(
  session: TargetSession,
  checks: string[],
  timeoutSeconds: number
): Promise<{ ok: boolean; report: string }> {
  const deadline = Date.now() + timeoutSeconds * 1000
  let attempt = 0
  let last = ''
  for (;;) {
    attempt++
    let failed: string | undefined
    for (const check of checks) {
      const remaining = Math.max(1000, deadline - Date.now())
      try {
        // Health checks are the one place where input is meant to be shell: run as written by `sh -c`.
        const r = await session.execRetrying(shellCommand(['sh', '-c', check]), deadline, {
          timeoutMs: Math.min(remaining, 30_000),
          what: 'running a health check'
        })
        if (r.exitCode !== 0) {
          failed = check
          last = `health check failed (attempt ${attempt}, exit ${r.exitCode}): ${check}\n${(r.stdout + r.stderr).trim().slice(-2000)}`
          break
        }
      } catch (e) {
        failed = check
        last = `health check could not run (attempt ${attempt}): ${check}\n${(e as Error).message}`
        break
      }
    }
    if (!failed) {
      session.log.info(`Health checks passed (attempt ${attempt})`)
      return { ok: true, report: `health checks passed on attempt ${attempt}: ${checks.join('; ')}` }
    }
    if (Date.now() + 2000 >= deadline) {
      session.log.warning(last)
      return { ok: false, report: last }
    }
    session.log.info(`${last.split('\n')[0]}; retrying`)
    await new Promise(res => setTimeout(res, 2000))
  }
}

/**
 * The action gives up following an agent that has not finished (activation-timeout passed, or the
 * target could not be reached): it tells the agent, best effort, so the agent releases the deploy
 * lock itself when it reaches its final state. Returns true when the agent had already finished (the
 * action may then release the lock). If the target cannot be reached, the lease expires by itself
 * at most LEASE_SECONDS after the agent's last renewal.
 */
export async function abandonAgent(session: TargetSession, agent: AgentTracker): Promise<boolean> {
  if (!agent.dir) return false
  try {
    const r = await session.exec(shellCommand(['sh', '-c', ABANDON_SCRIPT, 'sh', agent.dir]), {
      timeoutMs: 15_000,
      what: 'handing the deploy lock to the activation agent'
    })
    return r.stdout.trim() === 'finished'
  } catch {
    return false
  }
}

/** What the agent is told (agent.sh's named options). */
export interface AgentRequest {
  dir: string
  toplevel: string
  action: string
  activationTimeoutSeconds: number
  /** How long to wait for the action's decision (0: finish right after activating). */
  waitSeconds: number
  onTimeout: 'rollback' | 'keep'
  before: RemoteState
  lock?: LockRequest
}

/** agent.sh's command line (after the script): named options, so their order cannot be mixed up. */
export function agentCommandOptions(r: AgentRequest): string[] {
  const opt = (name: string, value: string | number | undefined): string[] =>
    value === undefined || value === '' ? [] : [`--${name}`, String(value)]
  return [
    ...opt('dir', r.dir),
    ...opt('toplevel', r.toplevel),
    ...opt('action', r.action),
    ...opt('activation-timeout', r.activationTimeoutSeconds),
    ...opt('wait-seconds', r.waitSeconds),
    ...opt('on-timeout', r.onTimeout),
    ...opt('prev-current', r.before.current),
    ...opt('prev-profile', r.before.profile),
    ...opt('prev-generation', generationOf(r.before.profileLink)),
    ...opt('lock-dir', r.lock?.dir),
    ...opt('lock-id', r.lock?.id),
    ...opt('lease', r.lock?.leaseSeconds)
  ]
}

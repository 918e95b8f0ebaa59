/**
 * The runner's half of the agent protocol: what the agent is told when it starts (agent.sh's
 * options) and the session Target.startAgent returns, through which the runner follows the agent,
 * sends the decision, and lets it go. How the deploy uses it (when to confirm, the health checks):
 * src/deploy/activate.ts.
 */
import { ActionError } from '../../errors'
import { LockRequest } from '../lock/on-target'
import { generationOf, RemoteState } from '../remote-state'
import { AgentState } from './outcome'

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
  /**
   * Only put the target back as it was before: what an agent that died without an outcome had
   * done (the generation it made, if any, and whether it was a new one).
   */
  rollbackOf?: { generation?: number; createdNew: boolean; dir: string }
}

/** How long a follow poll may wait on the target for news, and whether the exit status is news. */
export interface FollowWait {
  ms: number
  knowsStatus: boolean
}

export interface AgentPoll {
  /** Whether the target waited for news before answering (else the caller paces its polls). */
  waited?: boolean
  chunk: string
  /** The log's size on the target (more to read when beyond offset + chunk). */
  size: number
  state: AgentState
}

/** One started agent (its directory on the target, DIR in agent.sh). */
export interface AgentSession {
  readonly dir: string
  /**
   * One look at the agent: its log from `offset` (bounded) and its state. With `wait`, the target
   * first waits up to that long for news (see follow.sh). Retries the link until `deadline`.
   */
  follow(offset: number, deadline: number, wait?: FollowWait): Promise<AgentPoll>
  /**
   * Writes the decision (once: the first of the action's and the agent's own timeout counts):
   * "won", or "lost:" and the decision that counted. With `follow`, then one look at the agent in
   * the same command, as follow(offset, …, wait) with the exit status known.
   */
  decide(
    decision: 'confirm' | 'abort',
    follow?: { offset: number; wait: FollowWait }
  ): Promise<{ answer: string; poll?: AgentPoll }>
  /** Tells the agent the action stops following; true when it had already finished. */
  abandon(): Promise<boolean>
  /** Removes its directory (a finished agent waits for that before it leaves the lock to the action). */
  remove(): Promise<void>
}

/**
 * The agent's start was sent and no answer came back (the link dropped and stayed down): the agent
 * may run. Its session is the caller's, to hand the lock to it (abandon) rather than release it.
 */
export class AgentStartUnanswered extends ActionError {
  constructor(
    readonly session: AgentSession,
    label: string,
    cause: ActionError
  ) {
    super(
      `the answer to starting the activation on ${label} never came: ${cause.message}`,
      `The activation may have started there: unconfirmed, it rolls back by itself (with magic rollback), and it keeps the deploy lock until it has ended. Check /run/current-system on ${label} before deploying again.`,
      'activate'
    )
  }
}

/** agent.sh's command line (after the script): named options, so their order cannot be mixed up. */
export function agentCommandOptions(r: AgentRequest): string[] {
  const opt = (name: string, value: string | number | undefined): string[] =>
    value === undefined || value === '' ? [] : [`--${name}`, String(value)]
  const before: RemoteState = r.before
  return [
    ...opt('dir', r.dir),
    ...opt('toplevel', r.toplevel),
    ...opt('action', r.action),
    ...opt('activation-timeout', r.activationTimeoutSeconds),
    ...opt('wait-seconds', r.waitSeconds),
    ...opt('on-timeout', r.onTimeout),
    ...opt('prev-current', before.current),
    ...opt('prev-profile', before.profile),
    ...opt('prev-generation', generationOf(before.profileLink)),
    ...opt('lock-dir', r.lock?.dir),
    ...opt('lock-id', r.lock?.id),
    ...opt('lease', r.lock?.leaseSeconds),
    ...(r.rollbackOf
      ? [
          '--rollback-of-generation',
          r.rollbackOf.generation === undefined ? '-' : String(r.rollbackOf.generation),
          '--rollback-created-new',
          r.rollbackOf.createdNew ? '1' : '0',
          '--rollback-of-dir',
          r.rollbackOf.dir
        ]
      : [])
  ]
}

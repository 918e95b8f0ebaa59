/**
 * The agent's session over SSH (SshTarget's startAgent): each step is one of the target's scripts
 * (place-agent.sh with start-agent.sh, follow.sh, decide.sh, abandon.sh), or, for a deploy user,
 * the gate's verb of that name (prepare-agent, then start-agent: nixos/deploy-user/gate.sh).
 */
import { Readable } from 'stream'
import { ActionError } from '../../errors'
import { Log } from '../../log/untrusted'
import { RemoteResult } from '../../ssh/connection'
import { GateVerb } from '../gate'
import { AGENT_SCRIPT } from '../scripts'
import { parseAgentState } from './outcome'
import {
  agentCommandOptions,
  AgentPoll,
  AgentRequest,
  AgentSession,
  AgentStartUnanswered,
  FollowWait
} from './session'

/** Each follow poll must answer quickly; one that does not means the link is gone. */
export const POLL_TIMEOUT_MS = 10_000
/** One follow poll returns at most this much of the agent's log; a longer backlog takes more polls. */
export const FOLLOW_CHUNK_BYTES = 256 * 1024
/** The longest a follow poll waits on the target for news: well within POLL_TIMEOUT_MS. */
const MAX_FOLLOW_WAIT_TENTHS = 30
const START_TIMEOUT_MS = 120_000

interface RunOptions {
  stdin?: string | Readable
  timeoutMs: number
  what: string
  /** The command a login that takes commands runs instead of the verb's script. */
  shell?: string[]
}

/** What the session needs of its SshTarget: to run one verb, once or retried until a deadline. */
export interface VerbWire {
  readonly label: string
  readonly log: Log
  /** A deploy user's gate, which runs its own copies of the scripts (gate.ts). */
  readonly gated: boolean
  run(verb: GateVerb, args: string[], opts: RunOptions): Promise<RemoteResult>
  /** Idempotent verbs only: reconnects and runs it again when the connection drops. */
  runRetrying(
    verb: GateVerb,
    args: string[],
    opts: RunOptions & { stdin?: string; deadline?: number }
  ): Promise<RemoteResult>
}

/** Writes and starts the agent, detached; 'lost-lock' when this run no longer holds the lock. */
export async function startAgentOverSsh(
  wire: VerbWire,
  req: AgentRequest
): Promise<AgentSession | 'lost-lock'> {
  // A connection lost while writing or starting the agent (a flaky link, a jump host restarting)
  // is retried over a new one: the scripts are idempotent, and the start script starts the agent
  // at most once per directory ("started-already" on a retry whose first try got through).
  if (wire.gated) {
    // A gate writes its own copy of the agent (the one of the module's release), as a verb of its own.
    const prep = await wire.runRetrying('prepare-agent', [req.dir], {
      stdin: '',
      timeoutMs: START_TIMEOUT_MS,
      what: 'writing the activation agent'
    })
    if (prep.exitCode !== 0)
      throw new ActionError(
        `could not prepare the activation on ${wire.label}: ${prep.stderr.trim().slice(-300)}`,
        'The target user must be able to write /run (use root or sudo).',
        'activate'
      )
  }
  // Else the start writes the agent first (place-agent.sh), in the same command: one round trip.
  let started: RemoteResult
  try {
    started = await wire.runRetrying('start-agent', agentCommandOptions(req), {
      stdin: wire.gated ? undefined : AGENT_SCRIPT,
      timeoutMs: START_TIMEOUT_MS,
      what: 'starting the activation agent'
    })
  } catch (e) {
    if (!(e instanceof ActionError)) throw e
    throw new AgentStartUnanswered(new SshAgentSession(wire, req.dir), wire.label, e)
  }
  if (started.exitCode === 0 && started.stdout.trim() === 'lost-lock') return 'lost-lock'
  if (started.exitCode !== 0 || !/started-/.test(started.stdout))
    throw new ActionError(
      `could not start the activation on ${wire.label}: ${started.stderr.trim().slice(-300)}`,
      'The target user must be able to write /run (use root or sudo), and the target needs setsid (util-linux) or systemd-run.',
      'activate'
    )
  wire.log.info(`Activation agent started on ${wire.label} (${started.stdout.trim()}, ${req.dir})`)
  return new SshAgentSession(wire, req.dir)
}

/** A follow poll's wait on the target, in the tenths of a second follow.sh counts in. */
function waitTenths(wait: FollowWait | undefined): number {
  return wait ? Math.max(0, Math.min(Math.floor(wait.ms / 100), MAX_FOLLOW_WAIT_TENTHS)) : 0
}

/** follow.sh's answer: the log's chunk on stdout, the state on stderr. */
function pollFrom(stdout: string, stderr: string, tenths: number): AgentPoll {
  const { size, ...state } = parseAgentState(stderr)
  return { chunk: stdout, size, state, waited: tenths > 0 }
}

class SshAgentSession implements AgentSession {
  constructor(
    private readonly wire: VerbWire,
    readonly dir: string
  ) {}

  async follow(offset: number, deadline: number, wait?: FollowWait): Promise<AgentPoll> {
    const tenths = waitTenths(wait)
    const r = await this.wire.runRetrying(
      'follow',
      [this.dir, String(offset), String(FOLLOW_CHUNK_BYTES), String(tenths), wait?.knowsStatus ? '1' : '0'],
      { deadline, timeoutMs: POLL_TIMEOUT_MS, what: 'following the activation log' }
    )
    return pollFrom(r.stdout, r.stderr, tenths)
  }

  async decide(
    decision: 'confirm' | 'abort',
    follow?: { offset: number; wait: FollowWait }
  ): Promise<{ answer: string; poll?: AgentPoll }> {
    const tenths = waitTenths(follow?.wait)
    const looks = follow ? [String(follow.offset), String(FOLLOW_CHUNK_BYTES), String(tenths)] : []
    const r = await this.wire.run('decide', [this.dir, decision, ...looks], {
      timeoutMs: POLL_TIMEOUT_MS,
      what: `sending the ${decision === 'confirm' ? 'confirmation' : 'abort'}`
    })
    // decide.sh's one line; then, with a look, the log from the offset (follow.sh's stdout).
    const cut = r.stdout.indexOf('\n')
    const first = cut < 0 ? r.stdout : r.stdout.slice(0, cut)
    const answer = /^(won|failed|lost:.*)$/.test(first) ? first : ''
    // Only a look that answered whole (decide.sh's line, then follow.sh's state) is taken; else
    // the next follow poll reads the log from where the action was.
    if (!follow || !answer || cut < 0 || !/^size=/m.test(r.stderr)) return { answer }
    return { answer, poll: pollFrom(r.stdout.slice(cut + 1), r.stderr, tenths) }
  }

  async abandon(): Promise<boolean> {
    try {
      const r = await this.wire.run('abandon', [this.dir], {
        timeoutMs: 15_000,
        what: 'handing the deploy lock to the activation agent'
      })
      return r.stdout.trim() === 'finished'
    } catch {
      return false
    }
  }

  async remove(): Promise<void> {
    await this.wire
      .run('remove-agent-dir', [this.dir], {
        shell: ['rm', '-rf', this.dir],
        timeoutMs: 30_000,
        what: 'removing the activation directory'
      })
      .catch(() => undefined)
  }
}

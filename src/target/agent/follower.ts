/**
 * The runner following one agent through its session: polls it (follow.sh waits on the target for
 * news), prints its log as it comes, keeps the log's tail and the last state, until a condition
 * holds or a deadline passes. What the deploy does with the state: src/deploy/activate.ts.
 */
import { Log } from '../../log/untrusted'
import { AgentState } from './outcome'
import { AgentSession } from './session'

/** Between polls of a target that does not wait for news itself. */
const POLL_MS = 1_000
/** How long one poll of the agent may wait on the target for news (see follow.sh). */
const FOLLOW_WAIT_MS = 2_000
/** The activation log kept in memory (for the summary and dry-activate's units): its tail. */
const MAX_KEPT_LOG = 1 << 20

/** The agent ended without an outcome: killed ('dead'), or its directory gone too (a reboot). */
export class AgentDied extends Error {
  constructor(readonly how: 'dead' | 'gone') {
    super(`the activation agent ${how === 'dead' ? 'was killed' : 'is gone'}`)
  }
}

/** One activation being followed: the agent's session, its log so far, its last state. */
export class Follower {
  log = ''
  offset = 0
  state: AgentState = {}
  /** What the agent recorded while it could: kept when its directory is gone. */
  generation: number | undefined
  createdNew: boolean | undefined

  constructor(
    readonly session: AgentSession,
    private readonly out: Log,
    /** Marked finished once an outcome is seen (the deploy's AgentTracker). */
    private readonly agent: { finished: boolean }
  ) {}

  get dir(): string {
    return this.session.dir
  }

  /**
   * Polls the agent until `done` holds (with nothing left to read) or `deadline` passes; throws
   * AgentDied when it ended without an outcome.
   */
  async until(done: (s: AgentState) => boolean, deadline: number): Promise<AgentState> {
    // What the last look (a decision's) saw may be enough: the status and the outcome, once there, stay.
    if (this.looked && done(this.state) && this.offset >= this.size) return this.state
    for (;;) {
      // The target waits for news (a log line, the status, the outcome) up to FOLLOW_WAIT_MS.
      const wait = {
        ms: Math.min(FOLLOW_WAIT_MS, deadline - Date.now()),
        knowsStatus: this.state.status !== undefined
      }
      const poll = await this.session.follow(this.offset, deadline, wait)
      const backlog = this.take(poll.chunk, poll.size, poll.state)
      // follow.sh looks at the process before the outcome: no outcome from a dead agent is final.
      if (
        poll.state.outcome === undefined &&
        (poll.state.agent === 'dead' || poll.state.agent === 'gone') &&
        !backlog
      )
        throw new AgentDied(poll.state.agent)
      if (done(poll.state) && !backlog) return poll.state
      if (Date.now() >= deadline) return poll.state
      if (!backlog && !poll.waited) await new Promise(res => setTimeout(res, POLL_MS))
    }
  }

  /**
   * Sends the decision, with one look at the agent in the same command (its wait as a poll's):
   * the outcome the decision brings is then seen without another. The decision's answer.
   */
  async decide(decision: 'confirm' | 'abort'): Promise<string> {
    const wait = { ms: FOLLOW_WAIT_MS, knowsStatus: true }
    const { answer, poll } = await this.session.decide(decision, { offset: this.offset, wait })
    if (poll) this.take(poll.chunk, poll.size, poll.state)
    return answer
  }

  /** Whether a look's answer (a poll's or a decision's) was taken yet, and the log's size it saw. */
  private looked = false
  private size = 0

  /** Takes one poll's news; whether more of the log is left to read. */
  private take(chunk: string, size: number, state: AgentState): boolean {
    this.looked = true
    this.size = size
    if (chunk) {
      this.out.untrusted(chunk)
      this.log = (this.log + chunk).slice(-MAX_KEPT_LOG)
    }
    this.offset = Math.max(this.offset, Math.min(size, this.offset + Buffer.byteLength(chunk)))
    this.state = state
    this.generation = state.generation ?? this.generation
    this.createdNew = state.createdNew ?? this.createdNew
    if (state.outcome !== undefined) this.agent.finished = true
    return this.offset < size
  }
}

import { ActionError, errorMessage } from '../errors'
import { Log, plainLog } from '../log/untrusted'
import { ExecOptions, RemoteHost, RemoteResult } from '../ssh/connection'

/**
 * The connection to one target, re-dialled when it is lost. Activation runs detached on the target,
 * so losing the connection (a flaky link, the new system restarting sshd or the network) is not a
 * failure in itself: the session reconnects -- both hops afresh -- and carries on following. A
 * confirmation's new connection (redialTarget) dials only the target again.
 */
export class TargetSession {
  private host: RemoteHost | undefined
  /** The target's label: the same endpoint whatever connection is live (also while there is none). */
  readonly label: string
  /** The dial under way, shared: the lock's renewal and a retrying command may both find the link gone. */
  private dialing: Promise<RemoteHost> | undefined

  constructor(
    first: RemoteHost,
    private readonly dial: () => Promise<RemoteHost>,
    /** Where this machine's deploy logs (prefixed with its name when several deploy at once). */
    readonly log: Log = plainLog
  ) {
    this.host = first
    this.label = first.target.label
  }

  /** The live connection, dialling one (only one at a time) when there is none. */
  private live(): Promise<RemoteHost> {
    if (this.host?.alive) return Promise.resolve(this.host)
    return this.redial()
  }

  private redial(): Promise<RemoteHost> {
    this.dialing ??= (async () => {
      const old = this.host
      this.host = undefined
      old?.close()
      try {
        this.host = await this.dial()
        return this.host
      } finally {
        this.dialing = undefined
      }
    })()
    return this.dialing
  }

  /** Runs a command on the current connection (no retry: use for steps that must not repeat). */
  async exec(command: string, opts: ExecOptions = {}): Promise<RemoteResult> {
    return (await this.live()).exec(command, opts)
  }

  /** Drops the current connection and dials a new one (both hops); joins a dial already under way. */
  reconnect(): Promise<RemoteHost> {
    return this.redial()
  }

  /**
   * A confirmation's new connection to the target: through the current connection's own jump
   * host chain while the connection and the chain are up (RemoteHost.redialTarget: the target
   * dialled afresh, the jump host kept), else both hops dialled afresh, as reconnect. Joins a dial
   * already under way.
   */
  redialTarget(): Promise<RemoteHost> {
    const current = this.host
    if (this.dialing || !current?.alive) return this.redial()
    const attempt = this.throughChain(current)
    this.dialing = attempt
    return attempt
  }

  /** redialTarget through the live chain; both hops afresh when there is none. */
  private async throughChain(current: RemoteHost): Promise<RemoteHost> {
    let next: RemoteHost | undefined
    try {
      next = await current.redialTarget()
    } finally {
      // Ours: while it ran, other callers joined it instead of dialling.
      this.dialing = undefined
    }
    if (!next) return this.redial()
    this.host = next
    return next
  }

  /**
   * Runs an idempotent command, reconnecting and retrying when the connection fails, until
   * `deadline` (epoch ms). Throws the last error when time runs out.
   */
  async execRetrying(command: string, deadline: number, opts: ExecOptions = {}): Promise<RemoteResult> {
    let announced = false
    let used: RemoteHost | undefined
    for (;;) {
      try {
        if (this.host && !this.host.alive && !this.dialing && !announced) {
          this.log.info(`Connection to the target lost (${this.label}); reconnecting…`)
          announced = true
        }
        used = undefined
        used = await this.live()
        return await used.exec(command, opts)
      } catch (e) {
        if (!(e instanceof ActionError)) throw e
        // A command that failed or hung on this connection: it is not trusted again (a poll that
        // times out is how a silently dead link shows). Others' dials are left alone.
        if (used && this.host === used) {
          this.host = undefined
          used.close()
        }
        if (!announced) {
          this.log.info(`Connection to the target lost (${errorMessage(e)}); reconnecting…`)
          announced = true
        }
        if (Date.now() >= deadline) throw e
        await new Promise(r => setTimeout(r, Math.min(2000, Math.max(0, deadline - Date.now()))))
      }
    }
  }

  close(): void {
    this.host?.close()
    this.host = undefined
  }
}

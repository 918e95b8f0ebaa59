import * as core from '@actions/core'
import { ActionError, errorMessage } from '../errors'
import { ExecOptions, RemoteHost, RemoteResult } from '../ssh/connection'

/**
 * The connection to one target, re-dialled when it is lost. Activation runs detached on the target,
 * so losing the connection (a flaky link, the new system restarting sshd or the network) is not a
 * failure in itself: the session reconnects -- both hops afresh -- and carries on following.
 */
export class TargetSession {
  private host: RemoteHost | undefined

  constructor(
    first: RemoteHost,
    private readonly dial: () => Promise<RemoteHost>
  ) {
    this.host = first
  }

  get label(): string {
    return this.current().target.label
  }

  private current(): RemoteHost {
    if (!this.host) throw new Error('no connection')
    return this.host
  }

  /** Runs a command on the current connection (no retry: use for steps that must not repeat). */
  exec(command: string, opts: ExecOptions = {}): Promise<RemoteResult> {
    if (!this.host || !this.host.alive) return this.reconnect().then(h => h.exec(command, opts))
    return this.host.exec(command, opts)
  }

  /** Drops the current connection and dials a new one (both hops). */
  async reconnect(): Promise<RemoteHost> {
    this.host?.close()
    this.host = undefined
    this.host = await this.dial()
    return this.host
  }

  /**
   * Runs an idempotent command, reconnecting and retrying when the connection fails, until
   * `deadline` (epoch ms). Throws the last error when time runs out.
   */
  async execRetrying(command: string, deadline: number, opts: ExecOptions = {}): Promise<RemoteResult> {
    let lastError: unknown
    let announced = false
    for (;;) {
      try {
        if (this.host && !this.host.alive && !announced) {
          core.info('Connection to the target lost; reconnecting…')
          announced = true
        }
        if (!this.host || !this.host.alive) await this.reconnect()
        return await this.current().exec(command, opts)
      } catch (e) {
        if (!(e instanceof ActionError)) throw e
        lastError = e
        this.host?.close()
        this.host = undefined
        if (!announced) {
          core.info(`Connection to the target lost (${errorMessage(e)}); reconnecting…`)
          announced = true
        }
        if (Date.now() >= deadline) throw lastError
        await new Promise(r => setTimeout(r, Math.min(2000, Math.max(0, deadline - Date.now()))))
      }
    }
  }

  close(): void {
    this.host?.close()
    this.host = undefined
  }
}

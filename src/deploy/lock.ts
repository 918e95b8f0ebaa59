import { ActionError } from '../errors'
import { LOCK_SCRIPT } from '../target/scripts'
import { Log } from '../report/untrusted'
import { shellCommand } from '../ssh/quote'
import { TargetSession } from './session'

export const LOCK_DIR = '/nix/var/nix-deploy-action/lock'
/**
 * A lease, renewed by the action and by the activation agent on the target while either is alive: a
 * run that crashed or lost its connection frees the target this long after its last renewal (so a
 * re-run after a cut link waits at most this long), while a deploy in progress keeps it.
 */
export const LEASE_SECONDS = 90
const RENEW_EVERY_MS = 20_000

/**
 * The lock itself lives on the target (src/target/scripts/lock.sh).
 *
 * One clock: the lease is kept in the target's own monotonic clock (/proc/uptime) with its boot id.
 * The runner's clock is never compared with the target's (a Pi without an RTC or NTP is minutes
 * off), and the wall clock can jump; uptime restarts at a reboot, while the owner file in /nix/var
 * survives it, so a lease from another boot is stale.
 *
 * One writer at a time: every read-decide-write runs under flock(1) on lock.flock, in a subshell
 * (the function body is `( … )`) so the descriptor, and with it the flock, is gone when the
 * operation ends, and no child (switch-to-configuration) inherits it. Two waiters taking over an
 * expired lease, a renewal racing a takeover, and a release racing a takeover are thus each decided
 * once: exactly one wins.
 */
export { LOCK_SCRIPT }

/** Who holds the lock, as the target says (seconds left by the target's own clock). */
export interface LockHolder {
  id: string
  secondsLeft: number
  description: string
}

export type LockAnswer = { acquired: true } | { acquired: false; holder: LockHolder }

/** Parses lock_op acquire's answer (the lines after any earlier output of the same script). */
export function parseLockAnswer(text: string): LockAnswer {
  const lines = text.split('\n')
  if (/^acquired$/.test(lines[0]?.trim() ?? '')) return { acquired: true }
  const [, id = '', left = '', description = ''] = lines
  return { acquired: false, holder: { id, secondsLeft: Number(left) || 0, description } }
}

/** One line describing this run, for whoever finds the lock held (no newlines; it is shown as text). */
export function ownerDescription(env: NodeJS.ProcessEnv = process.env): string {
  const repo = env.GITHUB_REPOSITORY
  const run = env.GITHUB_RUN_ID
  const where =
    repo && run
      ? `${env.GITHUB_SERVER_URL ?? 'https://github.com'}/${repo}/actions/runs/${run}`
      : 'a run outside GitHub Actions'
  return `nix-deploy-action ${where} (${env.GITHUB_WORKFLOW ?? 'workflow ?'}, started ${new Date().toISOString()})`.replace(
    /[\r\n]/g,
    ' '
  )
}

/** What identifies this run's hold on the lock of one target. */
export interface LockRequest {
  dir: string
  id: string
  leaseSeconds: number
  description: string
}

/** The arguments every lock script takes after its verb. */
export function lockArgs(r: LockRequest): string[] {
  return [r.dir, r.id, String(r.leaseSeconds), r.description]
}

export function heldError(label: string, holder: LockHolder, waitedSeconds: number): ActionError {
  return new ActionError(
    `${label} is locked by another deploy: ${holder.description || holder.id} (its lease has ${holder.secondsLeft} s left by the target's clock); waited ${Math.round(waitedSeconds)} s`,
    "Wait for that deploy to finish (or use `concurrency:` in the workflow so deploys to one host queue), or raise lock-timeout. A crashed run's lock expires by itself at the lease time.",
    'copy'
  )
}

/**
 * This run's hold on a target's deploy lock, once taken (the survey takes it: see SURVEY_SCRIPT).
 * The action renews the lease while it runs; a renewal that finds the lock gone (another run took
 * it over after the lease ran out: the target was unreachable for that long) marks it lost, and
 * nothing is activated after that. Once the activation agent runs, the agent holds it too, until it
 * reaches a final state; the action then releases it only when the agent's outcome is known.
 */
export class DeployLock {
  private renewTimer: NodeJS.Timeout | undefined
  private lostIt = false

  constructor(
    private readonly session: TargetSession,
    readonly request: LockRequest,
    private readonly log: Log
  ) {}

  get id(): string {
    return this.request.id
  }

  get lost(): boolean {
    return this.lostIt
  }

  private async run(verb: 'acquire' | 'renew' | 'release'): Promise<string> {
    const r = await this.session.exec(
      shellCommand(['sh', '-c', LOCK_SCRIPT, 'sh', verb, ...lockArgs(this.request)]),
      {
        timeoutMs: 60_000,
        what: `${verb === 'acquire' ? 'taking' : verb === 'renew' ? 'renewing' : 'releasing'} the deploy lock`
      }
    )
    if (r.exitCode !== 0)
      throw new ActionError(
        `could not ${verb} the deploy lock on ${this.session.label}: ${r.stderr.trim().slice(-300)}`,
        'The target user must be able to write /nix/var (use root or sudo), and the target needs flock (util-linux, on every NixOS).',
        'copy'
      )
    return r.stdout.trim()
  }

  /** Tries once to take the lock (the survey does this as its first step; tests call it directly). */
  async tryAcquire(): Promise<LockAnswer> {
    return parseLockAnswer(await this.run('acquire'))
  }

  /** Renews the lease now; false when the lock is no longer this run's. */
  async renew(): Promise<boolean> {
    if (this.lostIt) return false
    const answer = await this.run('renew')
    if (answer !== 'renewed') {
      this.lostIt = true
      this.log.warning(
        `the deploy lock on ${this.session.label} is no longer this run's: another deploy took it over`
      )
    }
    return !this.lostIt
  }

  /** Keeps the lease alive every RENEW_EVERY_MS until stop() (a failed renewal is retried next time). */
  startRenewing(): void {
    this.renewTimer ??= setInterval(() => {
      this.renew().catch(() => undefined)
    }, RENEW_EVERY_MS)
    this.renewTimer.unref()
  }

  stopRenewing(): void {
    if (this.renewTimer) clearInterval(this.renewTimer)
    this.renewTimer = undefined
  }

  /** Fails unless this run still holds the lock: checked before anything changes on the target. */
  async assertHeld(): Promise<void> {
    if (!(await this.renew()))
      throw new ActionError(
        `this run lost the deploy lock on ${this.session.label} before activating: another deploy took it over after the lease ran out`,
        'Nothing was activated by this run. Check the link to the target (it was unreachable for longer than the lease), then re-run.',
        'activate'
      )
  }

  async release(): Promise<void> {
    this.stopRenewing()
    if (this.lostIt) return
    await this.run('release').catch(e =>
      this.log.warning(`could not release the deploy lock (it expires by itself): ${(e as Error).message}`)
    )
  }
}

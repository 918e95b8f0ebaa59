import { randomBytes } from 'crypto'
import { ActionError, errorMessage } from '../../errors'
import { Log } from '../../log/untrusted'
import { LOCK_DIR, LockHolder, LockRequest, parseLockAnswer } from './on-target'
import { Target } from '../target'

/* The deploy lock's runner half: this run's hold on it and its lease; the target's half: ./on-target.ts. */

/**
 * A lease, renewed by the action and by the activation agent on the target while either is alive: a
 * run that crashed or lost its connection frees the target this long after its last renewal (so a
 * re-run after a cut link waits at most this long), while a deploy in progress keeps it. How the
 * target keeps it (its own clocks, flock): ./on-target.ts.
 */
export const LEASE_SECONDS = 90
const RENEW_EVERY_MS = 20_000
/** How often a run waiting for another run's lock asks again. */
export const LOCK_POLL_MS = 2_000

/** This run's request for a target's deploy lock, under `id`. */
export function lockRequest(id: string): LockRequest {
  return { dir: LOCK_DIR, id, leaseSeconds: LEASE_SECONDS, description: ownerDescription() }
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

export function heldError(label: string, holder: LockHolder, waitedSeconds: number): ActionError {
  if (holder.bootTrial)
    return new ActionError(
      `${label} is in the boot trial of another deploy: ${holder.description || holder.id}; the trial ends by itself within ${holder.secondsLeft} s (confirmed by that run, or back to the previous system); waited ${Math.round(waitedSeconds)} s`,
      'Wait for the trial to end (its lock is free then), or raise lock-timeout above reboot-timeout + confirm-timeout. A run cancelled after its reboot leaves the trial to end by itself.',
      'copy'
    )
  return new ActionError(
    `${label} is locked by another deploy: ${holder.description || holder.id} (its lease has ${holder.secondsLeft} s left by the target's clock); waited ${Math.round(waitedSeconds)} s`,
    "Wait for that deploy to finish (or use `concurrency:` in the workflow so deploys to one host queue), or raise lock-timeout. A crashed run's lock expires by itself at the lease time.",
    'copy'
  )
}

/**
 * This run's hold on a target's deploy lock, once taken (the survey takes it). The action renews the
 * lease while it runs; a renewal that finds the lock gone (another run took it over after the lease
 * ran out: the target was unreachable for that long) marks it lost, and nothing is activated after
 * that. Once the activation agent runs, the agent holds it too, until it reaches a final state; the
 * action then releases it only when the agent's outcome is known.
 */
export class DeployLock {
  private renewTimer: NodeJS.Timeout | undefined
  private lostIt = false

  constructor(
    private readonly target: Target,
    readonly request: LockRequest,
    private readonly log: Log
  ) {}

  /**
   * Takes the lock on its own (a deploy takes it within its survey), waiting up to
   * `timeoutSeconds` while another run holds it; renewed from then on.
   */
  static async acquire(target: Target, timeoutSeconds: number): Promise<DeployLock> {
    const request = lockRequest(randomBytes(8).toString('hex'))
    const started = Date.now()
    for (;;) {
      const answer = parseLockAnswer(await target.lock('acquire', request))
      if (answer.acquired) {
        const lock = new DeployLock(target, request, target.log)
        lock.startRenewing()
        return lock
      }
      const waited = (Date.now() - started) / 1000
      if (waited >= timeoutSeconds) throw heldError(target.label, answer.holder, waited)
      await new Promise(r => setTimeout(r, LOCK_POLL_MS))
    }
  }

  get lost(): boolean {
    return this.lostIt
  }

  /** Renews the lease now; false when the lock is no longer this run's. */
  async renew(): Promise<boolean> {
    if (this.lostIt) return false
    const answer = await this.target.lock('renew', this.request)
    if (answer !== 'renewed') {
      this.lostIt = true
      this.log.warning(
        `the deploy lock on ${this.target.label} is no longer this run's: another deploy took it over`
      )
    }
    return !this.lostIt
  }

  /** Keeps the lease alive every RENEW_EVERY_MS until stopRenewing() (a failed renewal is retried next time). */
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
    if (!(await this.renew())) throw lostLockError(this.target.label)
  }

  async release(): Promise<void> {
    this.stopRenewing()
    if (this.lostIt) return
    await this.target
      .lock('release', this.request)
      .catch(e =>
        this.log.warning(`could not release the deploy lock (it expires by itself): ${errorMessage(e)}`)
      )
  }
}

export function lostLockError(label: string): ActionError {
  return new ActionError(
    `this run lost the deploy lock on ${label} before activating: another deploy took it over after the lease ran out`,
    'This run activated nothing after it lost the lock. Check the link to the target (it was unreachable for longer than the lease, or it rebooted), and what it runs now, then re-run.',
    'activate'
  )
}

import * as core from '@actions/core'
import { ActionError } from '../errors'
import { shellCommand } from '../ssh/quote'
import { LOCK_SCRIPT, UNLOCK_SCRIPT } from './agent-script'
import { TargetSession } from './session'

export const LOCK_DIR = '/nix/var/nix-deploy-action/lock'
/**
 * A lease, renewed by the action and by the activation agent on the target while either is alive: a
 * run that crashed or lost its connection frees the target this long after its last renewal (so a
 * re-run after a cut link waits at most this long), while a deploy in progress keeps it.
 */
export const LEASE_SECONDS = 90
const RENEW_EVERY_MS = 20_000
const POLL_MS = 2_000

export interface LockAnswer {
  acquired: boolean
  /** For a held lock: who holds it and until when (from the owner file). */
  holder?: { id: string; expiry: number; description: string }
}

/** Parses LOCK_SCRIPT's answer. */
export function parseLockAnswer(stdout: string): LockAnswer {
  const lines = stdout.split('\n')
  if (/^acquired/.test(lines[0] ?? '')) return { acquired: true }
  const [id = '', expiry = '', description = ''] = lines.slice(1)
  return { acquired: false, holder: { id, expiry: Number(expiry) || 0, description } }
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

/** The deploy lock on the target, held from copy to confirm (see LOCK_SCRIPT). */
export class DeployLock {
  private renewTimer: NodeJS.Timeout | undefined
  waitedMs = 0

  constructor(
    private readonly session: TargetSession,
    readonly id: string,
    private readonly description: string
  ) {}

  private async tryOnce(): Promise<LockAnswer> {
    const expiry = Math.floor(Date.now() / 1000) + LEASE_SECONDS
    const r = await this.session.exec(
      shellCommand(['sh', '-c', LOCK_SCRIPT, 'sh', LOCK_DIR, this.id, String(expiry), this.description]),
      {
        timeoutMs: 60_000
      }
    )
    if (r.exitCode !== 0)
      throw new ActionError(
        `could not take the deploy lock on ${this.session.label}: ${r.stderr.trim().slice(-300)}`,
        'The target user must be able to write /nix/var (use root or sudo).',
        'copy'
      )
    return parseLockAnswer(r.stdout)
  }

  /** Takes the lock, waiting up to timeoutSeconds for another deploy to finish. */
  async acquire(timeoutSeconds: number): Promise<void> {
    const started = Date.now()
    let announced = false
    for (;;) {
      const answer = await this.tryOnce()
      if (answer.acquired) break
      const h = answer.holder!
      const waited = (Date.now() - started) / 1000
      if (waited >= timeoutSeconds)
        throw new ActionError(
          `${this.session.label} is locked by another deploy: ${h.description || h.id} (lease until ${new Date(h.expiry * 1000).toISOString()}); waited ${Math.round(waited)} s`,
          "Wait for that deploy to finish (or use `concurrency:` in the workflow so deploys to one host queue), or raise lock-timeout. A crashed run's lock expires by itself at the lease time.",
          'copy'
        )
      if (!announced) {
        core.info(`Waiting for the deploy lock on ${this.session.label}, held by ${h.description || h.id}`)
        announced = true
      }
      await new Promise(r => setTimeout(r, POLL_MS))
    }
    this.waitedMs = Date.now() - started
    this.renewTimer = setInterval(() => {
      this.tryOnce().catch(() => undefined)
    }, RENEW_EVERY_MS)
    this.renewTimer.unref()
  }

  async release(): Promise<void> {
    if (this.renewTimer) clearInterval(this.renewTimer)
    await this.session
      .exec(shellCommand(['sh', '-c', UNLOCK_SCRIPT, 'sh', LOCK_DIR, this.id]), { timeoutMs: 30_000 })
      .catch(e =>
        core.warning(`could not release the deploy lock (it expires by itself): ${(e as Error).message}`)
      )
  }
}

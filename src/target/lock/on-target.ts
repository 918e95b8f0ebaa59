/**
 * The deploy lock's target half: how the target keeps it (src/target/scripts/lock.sh, lock-command.sh),
 * what its answers say and the arguments it takes. The runner's half (the lease it renews): ./runner.ts.
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
export { LOCK_SCRIPT } from '../scripts'

export const LOCK_DIR = '/nix/var/nix-deploy-action/lock'

/** What identifies one run's hold on the lock of one target. */
export interface LockRequest {
  dir: string
  id: string
  leaseSeconds: number
  description: string
}

/** Who holds the lock, as the target says (seconds left by the target's own clock). */
export interface LockHolder {
  id: string
  secondsLeft: number
  description: string
  /** Held through a reboot for that run's boot trial, which is pending (lock.sh's v3 lease). */
  bootTrial?: boolean
}

export type LockAnswer = { acquired: true } | { acquired: false; holder: LockHolder }
export type LockVerb = 'acquire' | 'renew' | 'release'

/** Parses lock_op acquire's answer. */
export function parseLockAnswer(text: string): LockAnswer {
  const lines = text.split('\n')
  if (/^acquired$/.test(lines[0]?.trim() ?? '')) return { acquired: true }
  const [, id = '', left = '', description = '', kind = ''] = lines
  const holder: LockHolder = { id, secondsLeft: Number(left) || 0, description }
  if (kind.trim() === 'boot-trial') holder.bootTrial = true
  return { acquired: false, holder }
}

/** The arguments every lock script takes after its verb. */
export function lockArgs(r: LockRequest): string[] {
  return [r.dir, r.id, String(r.leaseSeconds), r.description]
}

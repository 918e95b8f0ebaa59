import { ActionError, errorMessage } from '../errors'
import { RemoteState } from '../target/remote-state'
import { BootTrialRecord, Target } from '../target/target'
import { RolledBackError, runHealthChecks } from './activate'
import { Goal } from './goal'

export const REBOOT_WHENS = ['never', 'auto', 'always'] as const
/** The `reboot` input: never; auto, when the new system needs one (needs-reboot); always. */
export type RebootWhen = (typeof REBOOT_WHENS)[number]

export interface RebootSettings {
  when: RebootWhen
  timeoutSeconds: number
  /** Between two attempts to reach the rebooting target (default 2 s; tests go faster). */
  pollMs?: number
}

/** Milliseconds between two attempts to reach a rebooting target. */
const POLL_MS = 2000

/**
 * Whether this deploy reboots the target: only modes that set the system profile (what a boot
 * boots), and then always, or when the new system's kernel, initrd, modules or parameters differ
 * from what the target booted. Unknown (no /run/booted-system) counts as no for `auto`.
 */
export function rebootsFor(goal: Goal, when: RebootWhen, needsReboot: boolean | undefined): boolean {
  if (!goal.setsProfile) return false
  return when === 'always' || (when === 'auto' && needsReboot === true)
}

/** A reboot's settings with the checks that follow it. */
export type RebootIntoSettings = RebootSettings & { healthChecks: string[]; healthTimeoutSeconds: number }

/** A boot on trial (nixos/boot-trial.nix on the target): what to go back to, and how long it waits. */
export type BootTrial = Omit<BootTrialRecord, 'system'>

/**
 * Reboots the target into its boot entry and waits until it answers again with another boot id
 * (within the reboot timeout, else it fails naming it); then it must run and have booted
 * `toplevel`; `afterBoot` runs (the lock, the keys), then the health checks. Returns how long the
 * reboot took.
 *
 * With a `trial`, the boot is on trial: the target's boot trial goes back to the previous system
 * (one more reboot) unless this confirms the boot after the checks passed. A system that boots
 * unreachable therefore comes back as the previous one: the wait spans the reboot, the trial's
 * wait and the reboot back. Checks that fail reject the trial; a confirmation that comes too late
 * finds it expired. Each ends in a RolledBackError once the target runs the previous system.
 */
export async function rebootInto(
  target: Target,
  toplevel: string,
  settings: RebootIntoSettings,
  bootIdBefore: string | undefined,
  afterBoot: () => Promise<void> = async () => undefined,
  trial?: BootTrial
): Promise<{ ms: number; healthReport?: string }> {
  const start = Date.now()
  await target.reboot(trial && { system: toplevel, ...trial })
  const waitMs = settings.timeoutSeconds * 1000 * (trial ? 2 : 1) + (trial ? trial.confirmSeconds * 1000 : 0)
  target.log.info(
    `Rebooting ${target.label}${trial ? ' into the new system on trial' : ''}; waiting up to ${Math.round(waitMs / 1000)} s for it to come back`
  )
  const state = await waitForNewBoot(
    target,
    start + waitMs,
    bootIdBefore,
    settings,
    trial
      ? `within twice reboot-timeout (${settings.timeoutSeconds} s) and confirm-timeout (${trial.confirmSeconds} s): its boot, the trial's wait and the boot back`
      : undefined
  )
  const ms = Date.now() - start
  target.log.info(`${target.label} is back after ${(ms / 1000).toFixed(1)} s`)
  if (trial && runs(state, trial.previous)) {
    await afterBoot()
    throw new RolledBackError(
      `${target.label} booted the new system, but the deploy could not reach it to confirm it within confirm-timeout (${trial.confirmSeconds} s) of its boot: its boot trial went back to the previous system ${trial.previous}`,
      'The target runs its previous system again. The new system may not start sshd or the network (check services.openssh and networking in it), or it came up too slowly: raise confirm-timeout.',
      trial.previous
    )
  }
  if (!runs(state, toplevel))
    throw new ActionError(
      `after the reboot ${target.label} runs ${state.current ?? 'nothing'} (booted ${state.booted?.system ?? 'unknown'}), not the new system ${toplevel}`,
      "The new system is the profile's default boot entry, but the target did not boot it: check the boot loader (its entries in /boot, and that the firmware boots them). Nothing was rolled back.",
      'verify'
    )
  try {
    await afterBoot()
  } catch (e) {
    // Reachable over SSH is what the trial asks: keep the system rather than reboot it under the
    // run that may hold the lock now.
    if (trial) await target.settleBootTrial('confirm').catch(() => undefined)
    throw e
  }
  const health =
    settings.healthChecks.length > 0
      ? await runHealthChecks(target, settings.healthChecks, settings.healthTimeoutSeconds)
      : undefined
  if (health && !health.ok) {
    if (!trial)
      throw new ActionError(
        `the new system booted on ${target.label}, but a health check failed after the reboot: ${health.report}`,
        'The target runs the new system. To go back, deploy the previous configuration, or on the target run `nixos-rebuild switch --rollback` (or choose the previous generation in the boot menu).',
        'verify',
        health.report
      )
    const verdict = await target.settleBootTrial('reject')
    return backFromTrial(target, state.bootId, trial, settings, afterBoot, {
      message: `a health check failed after the reboot into the new system on ${target.label}, so the deploy ${verdict === 'expired' ? 'found its boot trial already expired' : 'rejected its boot trial'} and the target went back to the previous system ${trial.previous}: ${health.report}`,
      hint: 'The target runs its previous system again. Fix what the check found in the new configuration and deploy again.',
      details: health.report
    })
  }
  if (trial && (await target.settleBootTrial('confirm')) === 'expired')
    return backFromTrial(target, state.bootId, trial, settings, afterBoot, {
      message: `the deploy confirmed the new system on ${target.label} too late: its boot trial had waited confirm-timeout (${trial.confirmSeconds} s) and went back to the previous system ${trial.previous}`,
      hint: 'The target runs its previous system again. Raise confirm-timeout: it must leave room for the reboot wait, the reconnection and the health checks.'
    })
  return { ms, healthReport: health?.report }
}

/** Whether the target runs `system` and booted it. */
function runs(state: RemoteState, system: string): boolean {
  return state.current === system && state.booted?.system === system
}

/** The trial goes back (one more reboot): wait for it, then fail as rolled back (or say it did not). */
async function backFromTrial(
  target: Target,
  trialBootId: string | undefined,
  trial: BootTrial,
  settings: RebootIntoSettings,
  afterBoot: () => Promise<void>,
  failure: { message: string; hint: string; details?: string }
): Promise<never> {
  target.log.info(`${target.label}: its boot trial goes back to ${trial.previous}; waiting for it to boot`)
  const state = await waitForNewBoot(
    target,
    Date.now() + settings.timeoutSeconds * 1000,
    trialBootId,
    settings
  )
  if (!runs(state, trial.previous))
    throw new ActionError(
      `${failure.message}; but after that boot ${target.label} runs ${state.current ?? 'nothing'} (booted ${state.booted?.system ?? 'unknown'})`,
      'Check the target by hand: its boot entries in /boot, and /nix/var/nix-deploy-action/boot-trial.* for what the trial did.',
      'verify',
      failure.details
    )
  await afterBoot()
  throw new RolledBackError(failure.message, failure.hint, trial.previous, failure.details)
}

/** Until the target answers from another boot than `bootIdBefore`; fails at `deadline`, saying what it waited for. */
async function waitForNewBoot(
  target: Target,
  deadline: number,
  bootIdBefore: string | undefined,
  settings: RebootSettings,
  waitedFor = `within reboot-timeout (${settings.timeoutSeconds} s)`
): Promise<RemoteState> {
  let lastError = ''
  while (Date.now() < deadline) {
    await new Promise(r => setTimeout(r, settings.pollMs ?? POLL_MS))
    try {
      await target.reconnect()
      const state = await target.readState()
      // Until the reboot happened, the old boot still answers: wait for another boot id.
      if (state.bootId !== undefined && state.bootId !== bootIdBefore) return state
    } catch (e) {
      lastError = errorMessage(e)
    }
  }
  throw new ActionError(
    `${target.label} did not come back from its reboot ${waitedFor}${lastError ? `: ${lastError}` : ''}`,
    'The new system is its default boot entry: a target that does not boot it needs hands on it (the boot menu has the previous generation). Raise reboot-timeout if it only boots slowly.',
    'verify'
  )
}

import { ActionError, errorMessage } from '../errors'
import { RemoteState } from '../target/remote-state'
import { Target } from '../target/target'
import { runHealthChecks } from './activate'
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

/**
 * Reboots the target into its boot entry and waits until it answers again with another boot id
 * (within the reboot timeout, else it fails naming it); then it must run and have booted
 * `toplevel`; `afterBoot` runs (the lock, the keys), then the health checks. Returns how long the
 * reboot took.
 */
export async function rebootInto(
  target: Target,
  toplevel: string,
  settings: RebootSettings & { healthChecks: string[]; healthTimeoutSeconds: number },
  bootIdBefore: string | undefined,
  afterBoot: () => Promise<void> = async () => undefined
): Promise<{ ms: number; healthReport?: string }> {
  const start = Date.now()
  await target.reboot()
  target.log.info(`Rebooting ${target.label}; waiting up to ${settings.timeoutSeconds} s for it to come back`)
  const state = await waitForNewBoot(target, start + settings.timeoutSeconds * 1000, bootIdBefore, settings)
  const ms = Date.now() - start
  target.log.info(`${target.label} is back after ${(ms / 1000).toFixed(1)} s`)
  if (state.current !== toplevel || state.booted?.system !== toplevel)
    throw new ActionError(
      `after the reboot ${target.label} runs ${state.current ?? 'nothing'} (booted ${state.booted?.system ?? 'unknown'}), not the new system ${toplevel}`,
      "The new system is the profile's default boot entry, but the target did not boot it: check the boot loader (its entries in /boot, and that the firmware boots them). Nothing was rolled back.",
      'verify'
    )
  await afterBoot()
  if (settings.healthChecks.length === 0) return { ms }
  const health = await runHealthChecks(target, settings.healthChecks, settings.healthTimeoutSeconds)
  if (!health.ok)
    throw new ActionError(
      `the new system booted on ${target.label}, but a health check failed after the reboot: ${health.report}`,
      'The target runs the new system. To go back, deploy the previous configuration, or on the target run `nixos-rebuild switch --rollback` (or choose the previous generation in the boot menu).',
      'verify',
      health.report
    )
  return { ms, healthReport: health.report }
}

async function waitForNewBoot(
  target: Target,
  deadline: number,
  bootIdBefore: string | undefined,
  settings: RebootSettings
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
    `${target.label} did not come back from its reboot within reboot-timeout (${settings.timeoutSeconds} s)${lastError ? `: ${lastError}` : ''}`,
    'The new system is its default boot entry: a target that does not boot it needs hands on it (the boot menu has the previous generation). Raise reboot-timeout if it only boots slowly.',
    'verify'
  )
}

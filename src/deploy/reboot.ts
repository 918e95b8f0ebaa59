import { ActionError, errorMessage, LockTakenError } from '../errors'
import { RemoteState } from '../target/remote-state'
import { BootTrialRecord, Target } from '../target/target'
import { CONFIRM_MARGIN_MS, RolledBackError } from './activate'
import { runHealthChecks } from './health-checks'
import { Goal } from './goal'

export const REBOOT_WHENS = ['never', 'auto', 'always'] as const
/** The `reboot` input: never; auto, when the new system needs one (needs-reboot); always. */
export type RebootWhen = (typeof REBOOT_WHENS)[number]

/** reboot-timeout's default: a Pi on Wi-Fi or behind a tunnel takes a minute or more to sshd. */
export const DEFAULT_REBOOT_TIMEOUT_SECONDS = 300

export interface RebootSettings {
  when: RebootWhen
  timeoutSeconds: number
  /** Between two attempts to reach the rebooting target (default 2 s; tests go faster). */
  pollMs?: number
}

/**
 * Milliseconds between two attempts to reach a rebooting target: the runner's first command should
 * follow sshd's start closely (each attempt that fails costs the target one refused connection).
 */
const POLL_MS = 500

/**
 * The boot trial's first window starts when its unit starts, some time after the reboot began (the
 * shutdown, the firmware, the kernel): the runner waits this much longer than the window.
 */
const TRIAL_START_ALLOWANCE_MS = 120_000

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
export type RebootIntoSettings = RebootSettings & {
  healthChecks: string[]
  healthTimeoutSeconds: number
  /** When the `timeout` input ends the whole run (epoch ms), if set. */
  runDeadline?: number
}

/** A boot on trial (nixos/boot-trial.nix on the target): what to go back to, and how long it waits. */
export type BootTrial = Omit<BootTrialRecord, 'system'>

/** How a reboot went, for the summary. */
export interface RebootResult {
  /** From the reboot command's answer (the reboot scheduled) to the runner's first command on the new boot. */
  ms: number
  /** From that command to the trial's confirmation (the keys, the health checks): with a trial only. */
  confirmedMs?: number
  healthReport?: string
}

/**
 * Reboots the target into its boot entry and waits until it answers again with another boot id
 * (within the reboot timeout, else it fails naming it); then it must run and have booted
 * `toplevel`; `afterBoot` runs (the lock, the keys), then the health checks.
 *
 * With a `trial`, the boot is on trial, in two windows (protocol 2, see nixos/boot-trial.sh): the
 * target waits up to `loginSeconds` (reboot-timeout) for this run's first login, which checks in,
 * then up to `confirmSeconds` for the confirmation, and otherwise goes back to the previous system
 * (one more reboot). Only a system whose after-boot steps and checks passed is confirmed: a failure
 * there rejects the trial. A system that boots unreachable comes back as the previous one: the wait
 * spans the reboot, the trial's first window and the reboot back. Each ends in a RolledBackError
 * once the target runs the previous system.
 *
 * With `trial.once` (the target's boot loader has a one-shot hook, nixos/boot-once.sh), the new
 * system is booted once and the previous one stays the default until the confirmation: a new
 * system that never reaches user space comes back as the previous one after its reset, and the
 * run fails saying so. `once` in the result: it was so.
 */
export async function rebootInto(
  target: Target,
  toplevel: string,
  settings: RebootIntoSettings,
  bootIdBefore: string | undefined,
  afterBoot: () => Promise<void> = async () => undefined,
  trial?: BootTrial
): Promise<RebootResult & { once?: boolean }> {
  const scheduled = await scheduleReboot(target, toplevel, trial)
  const start = scheduled.at
  trial = scheduled.trial
  const rebootMs = settings.timeoutSeconds * 1000
  // On trial, a new system that cannot be reached comes back as the previous one: its boot up to the
  // trial's start, the trial's first window, its going back (the boot entry written on an SD card)
  // and the boot back.
  const waitMs = trial
    ? trialWindowMs(trial) + rebootMs + TRIAL_START_ALLOWANCE_MS + GO_BACK_ALLOWANCE_SECONDS * 1000
    : rebootMs
  target.log.info(
    `Rebooting ${target.label}${trial ? ' into the new system on trial' : ''}; waiting up to ${Math.round(waitMs / 1000)} s for it to come back`
  )
  const state = await waitForNewBoot(
    target,
    start + waitMs,
    bootIdBefore,
    settings,
    trial
      ? `within ${Math.round(waitMs / 1000)} s: ${TRIAL_START_ALLOWANCE_MS / 1000} s for the trial's start, its boot trial's first window (${trialWindowMs(trial) / 1000} s), ${GO_BACK_ALLOWANCE_SECONDS} s to go back and its boot back (reboot-timeout, ${settings.timeoutSeconds} s)`
      : undefined
  )
  const ms = Date.now() - start
  target.log.info(`${target.label} is back after ${(ms / 1000).toFixed(1)} s`)
  await checkBootedSystem(target, state, toplevel, afterBoot, trial)
  if (!trial) return afterUntrialedBoot(target, settings, afterBoot, ms)
  return {
    ms,
    once: trial.once !== undefined,
    ...(await settleTrial(target, state.bootId, trial, settings, afterBoot))
  }
}

/**
 * Schedules the reboot, with the trial's record when on trial; when the reboot was scheduled, and
 * the trial as it stands (without its one-shot entry when that could not be made).
 */
async function scheduleReboot(
  target: Target,
  toplevel: string,
  trial: BootTrial | undefined
): Promise<{ at: number; trial?: BootTrial }> {
  const scheduled = await target.boot.reboot(
    trial && { system: toplevel, ...trial, lockWindowSeconds: lockWindowSeconds(trial) }
  )
  // From the reboot's scheduling (it happens 2 s later): the command itself may take a while on a
  // Pi (a one-shot entry rewrites the boot menu first), and is no part of the boot.
  const at = Date.now()
  if (trial?.once === undefined || scheduled.once?.ok === true) return { at, trial }
  target.log.warning(
    `${target.label}: the new system could not be made a one-shot boot entry${scheduled.once ? ` (${scheduled.once.why})` : ''}: it is the default, and a kernel that panics would need hands on the target`
  )
  return { at, trial: { ...trial, once: undefined } }
}

/** Fails unless the target came back on the new system, saying which it runs and why. */
async function checkBootedSystem(
  target: Target,
  state: RemoteState,
  toplevel: string,
  afterBoot: () => Promise<void>,
  trial: BootTrial | undefined
): Promise<void> {
  if (trial?.once !== undefined && runs(state, trial.previous))
    await settleFallBack(target, afterBoot, { ...trial, once: trial.once })
  if (trial && runs(state, trial.previous)) {
    await afterBootBack(target, afterBoot)
    throw new RolledBackError(
      `${target.label} booted the new system, but the deploy could not reach it within its boot trial's window (${trialWindowMs(trial) / 1000} s of its boot): its boot trial went back to the previous system ${trial.previous}`,
      'The target runs its previous system again. The new system may not start sshd or the network (check services.openssh and networking in it), or it came up too slowly: raise reboot-timeout.',
      trial.previous
    )
  }
  if (!runs(state, toplevel))
    throw new ActionError(
      `after the reboot ${target.label} runs ${state.current ?? 'nothing'} (booted ${state.booted?.system ?? 'unknown'}), not the new system ${toplevel}`,
      "The new system is the profile's default boot entry, but the target did not boot it: check the boot loader (its entries in /boot, and that the firmware boots them). Nothing was rolled back.",
      'verify'
    )
}

/**
 * A one-shot boot that came back on the previous system: fails saying whether the new one never
 * reached user space or the boot loader never ran its entry (boot-trial-steps.sh's fell-back step).
 */
async function settleFallBack(
  target: Target,
  afterBoot: () => Promise<void>,
  trial: BootTrial & { once: string }
): Promise<void> {
  const fell = await target.boot.settleTrial('fell-back')
  if (fell !== 'fell-back' && fell !== 'not-run') return
  await afterBootBack(target, afterBoot)
  throw fell === 'fell-back'
    ? new RolledBackError(
        `the new system did not reach user space on ${target.label} (a kernel panic, an initrd that could not mount its root, or a hang the watchdog ended): its boot loader ran it once, then booted the previous system ${trial.previous}, still the default`,
        "The target runs its previous system again. Its console shows why the new kernel or initrd stopped; check the new system's kernel, initrd and file systems (boot.initrd.availableKernelModules, fileSystems).",
        trial.previous
      )
    : new ActionError(
        `${target.label} booted its previous system ${trial.previous}, not the new one: its boot loader did not run the one-shot entry (its one-shot file ${trial.once} is as the deploy wrote it)`,
        "Nothing changed on the target: it runs the previous system, still the default. Install the boot loader's one-shot hook (nixos/boot-once.sh install, see docs/safety.md, 'A broken boot'), or remove services.nix-deploy-action.bootTrial.bootOnce.",
        'verify'
      )
}

/**
 * A boot on trial, the new system booted and reached: the check-in (protocol 2), `afterBoot` and
 * the health checks, then the confirmation; a failure rejects the trial, and once the target is
 * back on the previous system it ends in a RolledBackError. Also how a run settles the pending
 * trial of an earlier run of the same system (cancelled after its reboot).
 */
export async function settleTrial(
  target: Target,
  bootId: string | undefined,
  trial: BootTrial,
  settings: RebootIntoSettings,
  afterBoot: () => Promise<void>
): Promise<{ confirmedMs: number; healthReport?: string }> {
  const back = (failure: TrialFailure): Promise<never> =>
    backFromTrial(target, bootId, trial, settings, afterBoot, failure)
  const reachedAt = Date.now()
  if (trial.loginSeconds !== undefined) {
    const checkIn = await target.boot.settleTrial('check-in')
    if (checkIn === 'expired')
      return back({
        message: `${target.label} booted the new system, but the deploy logged in only after its boot trial's first window (reboot-timeout, ${trial.loginSeconds} s) had ended: it goes back to the previous system ${trial.previous}`,
        hint: 'The target runs its previous system again. Raise reboot-timeout: it must cover the boot up to sshd and the login through every hop.'
      })
    if (checkIn === 'none')
      throw new ActionError(
        `after the reboot ${target.label} runs the new system, but no boot trial is pending there (no /nix/var/nix-deploy-action/boot-trial)`,
        'Another run may have settled it. Check what the target runs, and nix-deploy-boot-trial.service in its journal.',
        'verify'
      )
  }
  const checked = await checkAfterBoot(target, settings, afterBoot)
  if (!checked.ok) {
    await target.boot.settleTrial('reject').catch(() => undefined)
    return back(checked.failure)
  }
  // The run's `timeout` is about to end it: a confirmation now could land after the step failed.
  if (settings.runDeadline !== undefined && Date.now() > settings.runDeadline - CONFIRM_MARGIN_MS) {
    await target.boot.settleTrial('reject').catch(() => undefined)
    throw new ActionError(
      `the run's timeout was about to pass before the new system could be confirmed on ${target.label}: the deploy rejected its boot trial, and the target goes back to the previous system ${trial.previous} by itself`,
      'Raise timeout: it must leave room for the reboot, the checks and the confirmation.',
      'verify'
    )
  }
  const confirmed = await target.boot.settleTrial('confirm')
  if (confirmed === 'expired')
    return back({
      message: `the deploy confirmed the new system on ${target.label} too late: its boot trial had waited confirm-timeout (${trial.confirmSeconds} s) after the deploy's login and went back to the previous system ${trial.previous}`,
      hint: 'The target runs its previous system again. Raise confirm-timeout: it must leave room for the keys and the health checks.'
    })
  if (confirmed === 'not-default')
    throw new ActionError(
      `the new system runs on ${target.label}, checked and confirmed, but it could not be made the boot default (it was booted once): its next boot runs the previous system ${trial.previous}`,
      'Deploy again to make it the default, or on the target run `nixos-rebuild boot` (and check that /boot has room). Until then a reboot brings the previous system back.',
      'verify'
    )
  return { confirmedMs: Date.now() - reachedAt, healthReport: checked.healthReport }
}

/** How long a trial that gave up may take to make the previous system the default and reboot. */
const GO_BACK_ALLOWANCE_SECONDS = 120

/**
 * How long into the new boot the deploy lock stays held for the trial (uptime seconds): its start,
 * both windows and a minute to spare. It ends earlier when the trial does (lock.sh).
 */
function lockWindowSeconds(trial: BootTrial): number {
  return TRIAL_START_ALLOWANCE_MS / 1000 + (trial.loginSeconds ?? 0) + trial.confirmSeconds + 60
}

/** The trial's first window: the login (protocol 2), or the whole wait for the confirmation (1). */
function trialWindowMs(trial: BootTrial): number {
  return (trial.loginSeconds ?? trial.confirmSeconds) * 1000
}

interface TrialFailure {
  message: string
  hint: string
  details?: string
}

/** After the boot: `afterBoot` (the lock, the keys), then the health checks. */
async function checkAfterBoot(
  target: Target,
  settings: RebootIntoSettings,
  afterBoot: () => Promise<void>
): Promise<{ ok: true; healthReport?: string } | { ok: false; failure: TrialFailure }> {
  try {
    await afterBoot()
  } catch (e) {
    // The run that holds the lock now settles the trial: not rejected from here.
    if (e instanceof LockTakenError) throw e
    const hint = e instanceof ActionError ? ` ${e.hint}` : ''
    return {
      ok: false,
      failure: {
        message: `after the reboot into the new system on ${target.label}, ${errorMessage(e)}: the deploy rejected its boot trial (only a checked system is confirmed), and the target went back to the previous system`,
        hint: `The target runs its previous system again.${hint}`
      }
    }
  }
  if (settings.healthChecks.length === 0) return { ok: true }
  const health = await runHealthChecks(target, settings.healthChecks, settings.healthTimeoutSeconds)
  if (health.ok) return { ok: true, healthReport: health.report }
  return {
    ok: false,
    failure: {
      message: `a health check failed after the reboot into the new system on ${target.label}, so the deploy rejected its boot trial and the target went back to the previous system: ${health.report}`,
      hint: 'The target runs its previous system again. Fix what the check found in the new configuration and deploy again.',
      details: health.report
    }
  }
}

/** A reboot without a trial: the after-boot steps and checks, whose failure leaves the new system running. */
async function afterUntrialedBoot(
  target: Target,
  settings: RebootIntoSettings,
  afterBoot: () => Promise<void>,
  ms: number
): Promise<RebootResult> {
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
  failure: TrialFailure
): Promise<never> {
  target.log.info(`${target.label}: its boot trial goes back to ${trial.previous}; waiting for it to boot`)
  // The rest of the trial's window (a rejection that did not land: the trial ends it), its going
  // back (the boot entry written on an SD card) and a boot.
  const bound = trial.confirmSeconds + GO_BACK_ALLOWANCE_SECONDS + settings.timeoutSeconds
  const deadline = Date.now() + bound * 1000
  const waitedFor = `within ${bound} s (the rest of its trial's window, ${GO_BACK_ALLOWANCE_SECONDS} s to go back, reboot-timeout)`
  let state = await waitForNewBoot(target, deadline, trialBootId, settings, waitedFor)
  // A boot of the new system again (a reboot cut the trial, which goes back from that boot): the next.
  while (!runs(state, trial.previous)) {
    const next = await waitForNewBoot(target, deadline, state.bootId, settings, waitedFor).catch(
      () => undefined
    )
    if (!next) break
    state = next
  }
  if (!runs(state, trial.previous))
    throw new ActionError(
      `${failure.message}; but after that boot ${target.label} runs ${state.current ?? 'nothing'} (booted ${state.booted?.system ?? 'unknown'})`,
      'Check the target by hand: its boot entries in /boot, and /nix/var/nix-deploy-action/boot-trial.* for what the trial did.',
      'verify',
      failure.details
    )
  await afterBootBack(target, afterBoot)
  throw new RolledBackError(failure.message, failure.hint, trial.previous, failure.details)
}

/**
 * The lock and keys for the previous system, back from a trial: their failure (maybe why the trial
 * went back) does not change what happened, so it is a warning.
 */
async function afterBootBack(target: Target, afterBoot: () => Promise<void>): Promise<void> {
  await afterBoot().catch((e: unknown) =>
    target.log.warning(`${target.label} after its boot back: ${errorMessage(e)}`)
  )
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

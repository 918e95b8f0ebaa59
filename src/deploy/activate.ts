import * as core from '@actions/core'
import { ActionError } from '../errors'
import { Mode } from '../inputs'
import { Plan } from '../plan'
import { RemoteHost } from '../ssh/connection'
import { shellCommand } from '../ssh/quote'
import { PROBE_SCRIPT, RemoteState, SYSTEM_PROFILE, generationOf, parseRemoteState } from './remote-state'

/** Bound on one switch-to-configuration run (a slow Pi restarting many units takes minutes). */
export const ACTIVATION_TIMEOUT_MS = 600_000
const STEP_TIMEOUT_MS = 120_000

/** The deploy failed but the Pi is back on what it ran before. */
export class RolledBackError extends ActionError {
  readonly rolledBackTo: string | undefined
  constructor(cause: ActionError, rolledBackTo: string | undefined, detail: string) {
    super(
      `${cause.message}; rolled back to ${rolledBackTo ?? 'the previous state'}`,
      cause.hint,
      cause.phase,
      [cause.details, `Rollback:\n${detail}`].filter(Boolean).join('\n\n')
    )
    this.rolledBackTo = rolledBackTo
  }
}

export async function readRemoteState(host: RemoteHost): Promise<RemoteState> {
  const r = await host.exec(PROBE_SCRIPT, { timeoutMs: STEP_TIMEOUT_MS })
  if (r.exitCode !== 0)
    throw new ActionError(
      `reading the system state of ${host.target.label} failed (exit ${r.exitCode}): ${r.stderr.trim().slice(-300)}`,
      'The target must have a POSIX shell with readlink and id (any NixOS has).',
      'connect'
    )
  return parseRemoteState(r.stdout)
}

async function runStep(
  host: RemoteHost,
  argv: string[],
  what: string,
  timeoutMs = STEP_TIMEOUT_MS
): Promise<string> {
  const r = await host.exec(shellCommand(argv), { timeoutMs })
  if (r.exitCode !== 0)
    throw new ActionError(
      `${what} failed on ${host.target.label} (exit ${r.exitCode}): ${r.stderr.trim().slice(-500)}`,
      'See the log; the target keeps its previous system.',
      'activate'
    )
  return r.stdout
}

export interface ActivationOutcome {
  generation?: number
  /** Everything switch-to-configuration printed. */
  log: string
}

/**
 * Sets the system profile (switch, boot) and runs the new system's switch-to-configuration.
 * If that fails, puts the Pi back exactly as it was (see rollback) and throws RolledBackError.
 */
export async function activate(
  host: RemoteHost,
  plan: Plan,
  toplevel: string,
  before: RemoteState
): Promise<ActivationOutcome> {
  let generation: number | undefined
  if (plan.setsProfile) {
    await runStep(host, ['nix-env', '-p', SYSTEM_PROFILE, '--set', toplevel], 'setting the system profile')
    generation = generationOf((await readRemoteState(host)).profileLink)
  }
  let log = ''
  const action = plan.mode as Exclude<Mode, 'build'>
  core.startGroup(`switch-to-configuration ${action} on ${host.target.label}`)
  let result
  try {
    result = await host.exec(shellCommand([`${toplevel}/bin/switch-to-configuration`, action]), {
      timeoutMs: ACTIVATION_TIMEOUT_MS,
      onStdout: chunk => {
        log += chunk
        process.stdout.write(chunk)
      },
      onStderr: chunk => {
        log += chunk
        process.stdout.write(chunk)
      }
    })
  } catch (e) {
    core.endGroup()
    if (!(e instanceof ActionError)) throw e
    // The connection went away mid-activation: what the Pi ended up running is unknown from here.
    throw new ActionError(
      `${e.message} (during switch-to-configuration ${action})`,
      'The activation may have completed on the target. Check it (readlink /run/current-system), then re-run the deploy.',
      'activate'
    )
  }
  core.endGroup()
  if (result.exitCode === 0) return { generation, log }

  const cause = new ActionError(
    `switch-to-configuration ${action} failed on ${host.target.label} (exit ${result.exitCode}${result.signal ? `, signal ${result.signal}` : ''})`,
    'Fix the configuration (the activation output is in the log and the summary) and deploy again.',
    'activate',
    log.slice(-4000)
  )
  const detail = await rollback(host, plan, before, generation).catch((e: unknown) => {
    throw new ActionError(
      `${cause.message}, and rolling back failed too: ${(e as Error).message}`,
      'The target may be in a mixed state: check /run/current-system and the system profile on it (console or SSH) and activate a known-good generation by hand.',
      'activate',
      log.slice(-4000)
    )
  })
  throw new RolledBackError(cause, before.current, detail)
}

/**
 * Puts the Pi back as it was before this deploy: the profile link exactly as it was (not "profile
 * minus one": after an earlier `boot` or `test` deploy the running system and the profile differ),
 * the generation this run created deleted, the previously running system re-activated, and the boot
 * entry pointing at the previous profile. Returns a description of what it did.
 */
export async function rollback(
  host: RemoteHost,
  plan: Plan,
  before: RemoteState,
  createdGeneration: number | undefined
): Promise<string> {
  const steps: string[] = []
  const previousGeneration = generationOf(before.profileLink)
  if (plan.setsProfile && createdGeneration !== undefined) {
    if (previousGeneration !== undefined && previousGeneration !== createdGeneration) {
      await runStep(
        host,
        ['nix-env', '-p', SYSTEM_PROFILE, '--switch-generation', String(previousGeneration)],
        'restoring the system profile'
      )
      await runStep(
        host,
        ['nix-env', '-p', SYSTEM_PROFILE, '--delete-generations', String(createdGeneration)],
        'deleting the failed generation'
      )
      steps.push(
        `system profile back to generation ${previousGeneration}; generation ${createdGeneration} deleted`
      )
    } else if (previousGeneration === undefined) {
      await runStep(
        host,
        ['rm', '-f', SYSTEM_PROFILE, `${SYSTEM_PROFILE}-${createdGeneration}-link`],
        'removing the failed profile'
      )
      steps.push(`system profile removed (there was none before)`)
    }
  }
  if (plan.changesRunningSystem && before.current) {
    // A previous `test` deploy leaves current != profile: it must come back as `test`, not become the boot default.
    const how = plan.mode === 'switch' && before.current === before.profile ? 'switch' : 'test'
    await runStep(
      host,
      [`${before.current}/bin/switch-to-configuration`, how],
      `re-activating ${before.current}`,
      ACTIVATION_TIMEOUT_MS
    )
    steps.push(`re-activated ${before.current} (switch-to-configuration ${how})`)
  }
  if (
    plan.setsProfile &&
    before.profile &&
    !(plan.changesRunningSystem && before.current === before.profile)
  ) {
    await runStep(
      host,
      [`${before.profile}/bin/switch-to-configuration`, 'boot'],
      'restoring the boot entry',
      ACTIVATION_TIMEOUT_MS
    )
    steps.push(`boot entry back to ${before.profile}`)
  }
  const after = await readRemoteState(host)
  const problems = [
    before.current !== after.current && `running ${after.current ?? 'nothing'} instead of ${before.current}`,
    before.profile !== after.profile &&
      `profile is ${after.profile ?? 'missing'} instead of ${before.profile}`
  ].filter(Boolean)
  if (problems.length > 0) throw new Error(`after rolling back, the target is ${problems.join(' and ')}`)
  return steps.join('\n')
}

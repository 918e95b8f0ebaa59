import { DeployJob, BuiltSystem } from './deploy/deploy'
import { goalOf } from './deploy/goal'
import { LoadedKey } from './deploy/keys'
import { Inputs, Mode } from './inputs'
import type { Endpoint } from './ssh/endpoint'
import { formatAddress } from './ssh/address'

export type { Endpoint } from './ssh/endpoint'

export interface Plan {
  /** The mode asked for. */
  requestedMode: Mode
  /** The mode that will run: `build` when dry-activate had to degrade (fork PRs get no secrets). */
  mode: Mode
  target?: Endpoint
  jump?: Endpoint
  /** Whether this run sets the system profile (switch, boot). */
  setsProfile: boolean
  /** Whether this run changes what the Pi runs now (switch, test). */
  changesRunningSystem: boolean
  /** Whether the target must hear a confirmation over a new connection, or roll back by itself. */
  magicRollback: boolean
  /** Health checks to run (only where the new system runs: switch, test). */
  healthChecks: string[]
  /** Whether every remote command runs through sudo -n. */
  sudo: boolean
  /** Whether a deploy lock is held on the target (switch, boot, test). */
  locks: boolean
  warnings: string[]
}

export const DEFAULT_PORT = 22
export const DEFAULT_USER = 'root'

/** Decides what the run will do. Pure: all I/O happens in the phases that follow it. */
export function makePlan(inputs: Inputs): Plan {
  const warnings: string[] = []
  let mode = inputs.mode
  const canConnect =
    inputs.target !== undefined &&
    inputs.sshKey !== undefined &&
    (inputs.knownHosts.length > 0 || inputs.insecureSkipHostKeyCheck)
  if (mode === 'dry-activate' && !canConnect) {
    const missing = [
      !inputs.target && 'target-host',
      !inputs.sshKey && 'ssh-private-key',
      inputs.knownHosts.length === 0 && !inputs.insecureSkipHostKeyCheck && 'known-hosts'
    ].filter(Boolean)
    warnings.push(
      `dry-activate ran as a build only: ${missing.join(', ')} ${missing.length > 1 ? 'are' : 'is'} empty. ` +
        'This is expected for pull requests from forks, which get no secrets; on other runs, check the secret and variable names.'
    )
    mode = 'build'
  }
  if (inputs.insecureSkipHostKeyCheck && mode !== 'build')
    warnings.push(
      'insecure-skip-host-key-check is on: host keys are not verified, so a machine in the middle could take the deploy key and the system. Set known-hosts instead.'
    )

  let target: Endpoint | undefined
  let jump: Endpoint | undefined
  if (mode !== 'build' && inputs.target && inputs.sshKey) {
    const user = inputs.target.user ?? DEFAULT_USER
    const port = inputs.target.port ?? DEFAULT_PORT
    target = { host: inputs.target.host, port, user, key: inputs.sshKey, label: '' }
    target.label = `target ${formatAddress(target)}`
    if (inputs.jumpHost) {
      jump = {
        host: inputs.jumpHost.host,
        port: inputs.jumpHost.port ?? DEFAULT_PORT,
        user: inputs.jumpHost.user ?? user,
        key: inputs.jumpHostKey ?? inputs.sshKey,
        label: ''
      }
      jump.label = `jump host ${formatAddress(jump)}`
    }
  }
  const changesRunningSystem = mode === 'switch' || mode === 'test'
  if (!changesRunningSystem && inputs.healthChecks.length > 0 && mode !== 'build')
    warnings.push(`health-checks are not run in mode ${mode}: the new system does not run after it`)
  if (inputs.magicRollback === true && !changesRunningSystem && mode !== 'build')
    warnings.push(`magic-rollback has no effect in mode ${mode}: the running system does not change`)
  const sudo =
    inputs.sudo === 'true' || (inputs.sudo === 'auto' && target !== undefined && target.user !== 'root')
  return {
    requestedMode: inputs.mode,
    mode,
    target,
    jump,
    setsProfile: mode === 'switch' || mode === 'boot',
    changesRunningSystem,
    magicRollback: changesRunningSystem && (inputs.magicRollback ?? true),
    healthChecks: changesRunningSystem ? inputs.healthChecks : [],
    sudo,
    locks: mode === 'switch' || mode === 'boot' || mode === 'test',
    warnings
  }
}

/**
 * What one machine's deploy needs (src/deploy takes nothing else): the goal of the mode, the built
 * system, its keys, and every timeout and setting. Only for a plan that reaches a target.
 */
export function deployJob(
  inputs: Inputs,
  plan: Plan & { mode: Exclude<Mode, 'build'> },
  machine: { name: string; keys: LoadedKey[]; built: BuiltSystem; runDeadline?: number }
): DeployJob {
  return {
    name: machine.name,
    goal: goalOf(plan.mode),
    built: machine.built,
    sudoUser: plan.sudo ? plan.target?.user : undefined,
    keys: machine.keys,
    activation: {
      activationTimeoutSeconds: inputs.activationTimeoutSeconds,
      confirmTimeoutSeconds: inputs.confirmTimeoutSeconds,
      healthTimeoutSeconds: inputs.healthTimeoutSeconds,
      connectTimeoutSeconds: inputs.connectTimeoutSeconds,
      magicRollback: plan.magicRollback,
      healthChecks: plan.healthChecks,
      runDeadline: machine.runDeadline
    },
    lockTimeoutSeconds: inputs.lockTimeoutSeconds,
    keepGenerations: inputs.keepGenerations,
    compression: inputs.compression,
    substituteOnDestination: inputs.substituteOnDestination
  }
}

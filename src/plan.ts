import { DeployJob, BuiltSystem } from './deploy/deploy'
import { DeployMode, Goal, goalOf } from './deploy/goal'
import { LoadedKey } from './deploy/keys'
import { ActionError } from './errors'
import { Inputs, Mode } from './inputs'
import type { Endpoint } from './ssh/endpoint'
import { formatAddress } from './ssh/address'

export type { Endpoint } from './ssh/endpoint'
export type { DeployMode } from './deploy/goal'

/** What every plan says: the mode asked for and the warnings of deciding it. */
interface PlanBase {
  /** The mode asked for. */
  requestedMode: Mode
  warnings: string[]
}

/** A run that only builds (mode build, or dry-activate degraded to one): it has no target at all. */
export interface BuildPlan extends PlanBase {
  mode: 'build'
}

/** A run that reaches a target: where, how, and what the mode means there. */
export interface DeployPlan extends PlanBase {
  /** The mode that will run. */
  mode: DeployMode
  target: Endpoint
  /** The jump hosts in the order they are dialled (empty: the target is dialled directly). */
  jumps: Endpoint[]
  /** What the mode means on the target (sets the profile? changes what runs? locks?). */
  goal: Goal
  /** Whether the target must hear a confirmation over a new connection, or roll back by itself. */
  magicRollback: boolean
  /** Health checks to run (only where the new system runs: switch, test). */
  healthChecks: string[]
  /** Whether every remote command runs through sudo -n. */
  sudo: boolean
}

/** Either kind: `plan.mode === 'build'` tells them apart. */
export type Plan = BuildPlan | DeployPlan

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

  if (mode === 'build') {
    if (inputs.reboot !== 'never')
      warnings.push(
        `reboot: ${inputs.reboot} has no effect in mode build: nothing is deployed (needs-reboot still says whether it would need one, with diff-against)`
      )
    return { requestedMode: inputs.mode, mode, warnings }
  }
  if (!inputs.target || !inputs.sshKey)
    // readInputs refuses these for every mode but dry-activate, which degraded above.
    throw new ActionError(
      `mode ${mode} needs target-host and ssh-private-key`,
      'Set both, or use mode: build to only build.',
      'inputs'
    )
  const { target, jumps } = endpoints(inputs, inputs.target, inputs.sshKey)
  const goal = goalOf(mode)
  // A reboot into the profile (mode boot with reboot on) runs the new system as a switch does: its
  // boot is on trial and its checks run after it.
  const runsNewSystem = goal.changesRunningSystem || (goal.setsProfile && inputs.reboot !== 'never')
  if (!runsNewSystem && inputs.healthChecks.length > 0)
    warnings.push(`health-checks are not run in mode ${mode}: the new system does not run after it`)
  if (inputs.magicRollback === true && !runsNewSystem)
    warnings.push(`magic-rollback has no effect in mode ${mode}: the running system does not change`)
  return {
    requestedMode: inputs.mode,
    mode,
    target,
    jumps,
    goal,
    magicRollback: runsNewSystem && (inputs.magicRollback ?? true),
    healthChecks: runsNewSystem ? inputs.healthChecks : [],
    sudo: inputs.sudo === 'true' || (inputs.sudo === 'auto' && target.user !== 'root'),
    warnings
  }
}

/**
 * The target and the jump hosts with their defaults: a hop's user is the target's unless given, its
 * key the one jump-host-key gives it (one key for all hops, or one per hop), else the target's.
 */
function endpoints(
  inputs: Inputs,
  address: NonNullable<Inputs['target']>,
  key: NonNullable<Inputs['sshKey']>
): { target: Endpoint; jumps: Endpoint[] } {
  const user = address.user ?? DEFAULT_USER
  const target: Endpoint = { host: address.host, port: address.port ?? DEFAULT_PORT, user, key, label: '' }
  target.label = `target ${formatAddress(target)}`
  const hops = inputs.jumpHosts
  const keys = inputs.jumpHostKeys
  const jumps = hops.map((hop, n): Endpoint => {
    const jump: Endpoint = {
      host: hop.host,
      port: hop.port ?? DEFAULT_PORT,
      user: hop.user ?? user,
      key: keys.length === 0 ? key : keys.length === 1 ? keys[0] : keys[n],
      label: ''
    }
    jump.label = `jump host ${hops.length > 1 ? `${n + 1} of ${hops.length} ` : ''}${formatAddress(jump)}`
    return jump
  })
  return { target, jumps }
}

/**
 * What one machine's deploy needs (src/deploy takes nothing else): the goal of the mode, the built
 * system, its keys, and every timeout and setting. Only for a plan that reaches a target.
 */
export function deployJob(
  inputs: Inputs,
  plan: DeployPlan,
  machine: { name: string; keys: LoadedKey[]; built: BuiltSystem; runDeadline?: number }
): DeployJob {
  return {
    name: machine.name,
    goal: plan.goal,
    built: machine.built,
    sudoUser: plan.sudo ? plan.target.user : undefined,
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
    substituteOnDestination: inputs.substituteOnDestination,
    reboot: { when: inputs.reboot, timeoutSeconds: inputs.rebootTimeoutSeconds }
  }
}

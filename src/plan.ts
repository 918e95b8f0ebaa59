import type { CacheKeyInputs, CacheTrustInputs } from './cache/store-cache'
import type { PlanStamp } from './target/plan-record'
import type { SigningKey } from './cache/signing'
import { DeployJob, BuiltSystem } from './deploy/deploy'
import { DeployMode, Goal, goalOf, runsNewSystem } from './deploy/goal'
import { LoadedKey } from './deploy/deployment-keys'
import { ActionError, errorMessage } from './errors'
import { Inputs, Mode } from './inputs'
import type { BinfmtSetting } from './nix/binfmt-setup'
import { githubAccessConfig } from './nix/flake'
import type { Baseline, Source } from './nix/source'
import type { MachineEvaluation } from './nix/legacy'
import type { Rollout } from './rollout'
import type { ConnectOptions } from './ssh/connection'
import type { Endpoint } from './ssh/endpoint'
import { formatAddress, HostAddress, isValidUser, parseHostAddress } from './ssh/address'

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
  /** The deploy's timeouts and settings (deployJob adds the machine's own). */
  job: JobSettings
}

/**
 * mode report (a deploy plan's last job): where the machine is, to read what it runs; it changes
 * nothing there.
 */
export interface ReportPlan extends PlanBase {
  mode: 'report'
  target: Endpoint
  jumps: Endpoint[]
  sudo: boolean
  /** Its timeouts: with rollback-fleet, how it puts deployed machines back. */
  job: JobSettings
}

/** Any kind: `plan.mode` tells them apart. */
export type MachinePlan = BuildPlan | DeployPlan | ReportPlan

/** The inputs a machine's plan is made of (a network's machines each get their target from the file). */
export type MachineSettings = Pick<
  Inputs,
  | 'mode'
  | 'target'
  | 'targetOverride'
  | 'sshKey'
  | 'knownHosts'
  | 'insecureSkipHostKeyCheck'
  | 'jumpHosts'
  | 'jumpHostKeys'
  | 'healthChecks'
  | 'magicRollback'
  | 'sudo'
  | 'reboot'
  | 'rebootTimeoutSeconds'
  | 'activationTimeoutSeconds'
  | 'confirmTimeoutSeconds'
  | 'healthTimeoutSeconds'
  | 'connectTimeoutSeconds'
  | 'lockTimeoutSeconds'
  | 'keepGenerations'
  | 'compression'
  | 'substituteOnDestination'
>

/** A deploy's settings the plan decides; the machine adds its name, built system, keys and deadline. */
export type JobSettings = Omit<DeployJob, 'name' | 'goal' | 'built' | 'sudoUser' | 'keys' | 'activation'> & {
  activation: Omit<DeployJob['activation'], 'magicRollback' | 'healthChecks' | 'runDeadline'>
}

/**
 * What the whole run will do, decided once from the inputs: each phase takes its slice and none
 * sees the inputs themselves.
 */
export interface RunPlan {
  requestedMode: Mode
  source: Source
  /** The runner's Nix: its settings, the secret ones (never in argv or env), binfmt. */
  nix: { options: Array<[string, string]>; secretConfig?: string; binfmt: BinfmtSetting }
  /** The store cache; undefined when it is off. */
  cache?: CacheKeyInputs & CacheTrustInputs & { nixOptions: Array<[string, string]> }
  connect: Omit<ConnectOptions, 'sudo'>
  fleet: {
    parallel: number
    failFast: boolean
    rollout: Rollout
    rollbackFleet: boolean
    /** What a deploy user's gate needs the copied paths signed with. */
    signingKey?: SigningKey
  }
  diffAgainst?: Baseline
  /** The whole run's deadline (undefined: none). */
  timeoutSeconds?: number
  /** mode build with publish-to: where to publish, with which key, and the shards of the plan. */
  publish?: { uri: string; shards: number; rollout: Rollout; signingKey: SigningKey }
  /** What each machine's plan is made of. */
  machines: MachineSettings
  /** A flake's or configuration.nix's one machine, planned before the build; none for a network. */
  single?: MachinePlan
}

export const DEFAULT_PORT = 22
export const DEFAULT_USER = 'root'

/** Decides what one machine's deploy will do. Pure: all I/O happens in the phases that follow it. */
export function makePlan(inputs: MachineSettings): MachinePlan {
  const warnings: string[] = []
  let mode = inputs.mode
  const canConnect =
    inputs.target !== undefined &&
    inputs.sshKey !== undefined &&
    (inputs.knownHosts.length > 0 || inputs.insecureSkipHostKeyCheck)
  if (goalOf(mode).buildsWithoutSecrets && !canConnect) {
    const missing = [
      !inputs.target && 'target-host',
      !inputs.sshKey && 'ssh-private-key',
      inputs.knownHosts.length === 0 && !inputs.insecureSkipHostKeyCheck && 'known-hosts'
    ].filter(Boolean)
    warnings.push(
      `${mode} ran as a build only: ${missing.join(', ')} ${missing.length > 1 ? 'are' : 'is'} empty. ` +
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
  const sudo = inputs.sudo === 'true' || (inputs.sudo === 'auto' && target.user !== 'root')
  if (mode === 'report')
    return { requestedMode: inputs.mode, mode, target, jumps, sudo, job: jobSettings(inputs), warnings }
  const goal = goalOf(mode)
  const runsNew = runsNewSystem(goal, inputs.reboot !== 'never')
  if (!runsNew && inputs.healthChecks.length > 0)
    warnings.push(`health-checks are not run in mode ${mode}: the new system does not run after it`)
  if (inputs.magicRollback === true && !runsNew)
    warnings.push(`magic-rollback has no effect in mode ${mode}: the running system does not change`)
  return {
    requestedMode: inputs.mode,
    mode,
    target,
    jumps,
    goal,
    magicRollback: runsNew && (inputs.magicRollback ?? true),
    healthChecks: runsNew ? inputs.healthChecks : [],
    sudo,
    job: jobSettings(inputs),
    warnings
  }
}

/**
 * The target and the jump hosts with their defaults: a hop's user is the target's unless given, its
 * key the one jump-host-key gives it (one key for all hops, or one per hop), else the target's.
 */
function endpoints(
  inputs: MachineSettings,
  address: HostAddress,
  key: NonNullable<MachineSettings['sshKey']>
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

/** The settings of a machine's deploy that the inputs decide (the rest is the machine's own). */
function jobSettings(inputs: MachineSettings): JobSettings {
  return {
    activation: {
      activationTimeoutSeconds: inputs.activationTimeoutSeconds,
      confirmTimeoutSeconds: inputs.confirmTimeoutSeconds,
      healthTimeoutSeconds: inputs.healthTimeoutSeconds,
      connectTimeoutSeconds: inputs.connectTimeoutSeconds
    },
    lockTimeoutSeconds: inputs.lockTimeoutSeconds,
    keepGenerations: inputs.keepGenerations,
    compression: inputs.compression,
    substituteOnDestination: inputs.substituteOnDestination,
    reboot: { when: inputs.reboot, timeoutSeconds: inputs.rebootTimeoutSeconds }
  }
}

/**
 * What one machine's deploy needs (src/deploy takes nothing else): its plan's goal and settings,
 * the built system, its keys and the run's deadline. Only for a plan that reaches a target.
 */
export function deployJob(
  plan: DeployPlan,
  machine: {
    name: string
    keys: LoadedKey[]
    built: BuiltSystem
    runDeadline?: number
    planStamp?: PlanStamp
  }
): DeployJob {
  return {
    ...plan.job,
    planStamp: machine.planStamp,
    name: machine.name,
    goal: plan.goal,
    built: machine.built,
    sudoUser: plan.sudo ? plan.target.user : undefined,
    keys: machine.keys,
    activation: {
      ...plan.job.activation,
      magicRollback: plan.magicRollback,
      healthChecks: plan.healthChecks,
      runDeadline: machine.runDeadline
    }
  }
}

/**
 * Where a network's machine is: its host, port and user from the file (deployment.targetHost/
 * Port/User); target-host, target-port and target-user override them when one machine is deployed.
 */
export function machineTarget(settings: MachineSettings, m: MachineEvaluation): HostAddress {
  let fromFile: HostAddress
  try {
    fromFile = parseHostAddress(m.targetHost ?? m.name, `${m.name}: deployment.targetHost`)
  } catch (e) {
    throw new ActionError(errorMessage(e), 'Fix deployment.targetHost in the network file.', 'inputs')
  }
  if (m.targetPort !== undefined) {
    if (!Number.isInteger(m.targetPort) || m.targetPort < 1 || m.targetPort > 65535)
      throw new ActionError(
        `${m.name}: deployment.targetPort ${m.targetPort} is not a port (1-65535)`,
        'Fix deployment.targetPort in the network file.',
        'inputs'
      )
    fromFile.port = m.targetPort
  }
  if (m.targetUser !== undefined) {
    if (!isValidUser(m.targetUser))
      throw new ActionError(
        `${m.name}: deployment.targetUser ${JSON.stringify(m.targetUser)} is not a valid user name`,
        'Fix deployment.targetUser in the network file.',
        'inputs'
      )
    fromFile.user = m.targetUser
  }
  const o = settings.target
  return {
    host: o?.host ?? fromFile.host,
    port: o?.port ?? settings.targetOverride.port ?? fromFile.port,
    user: o?.user ?? settings.targetOverride.user ?? fromFile.user
  }
}

/** A machine's plan: the run's one plan, or (a network's machine) planned from where the file puts it. */
export function planMachine(run: RunPlan, m: MachineEvaluation): MachinePlan {
  if (run.single) return run.single
  return makePlan({ ...run.machines, target: machineTarget(run.machines, m) })
}

/** Decides what the run will do, from the validated inputs: the last place that sees them. */
export function planRun(inputs: Inputs): RunPlan {
  const { source } = inputs
  return {
    requestedMode: inputs.mode,
    source,
    nix: { options: inputs.nixOptions, secretConfig: runnerSecretConfig(inputs), binfmt: inputs.binfmt },
    cache: inputs.cache
      ? {
          cacheKey: inputs.cacheKey,
          signingKey: inputs.signingKey,
          source,
          mode: inputs.mode,
          nixOptions: inputs.nixOptions
        }
      : undefined,
    connect: {
      knownHosts: inputs.knownHosts,
      insecureSkipHostKeyCheck: inputs.insecureSkipHostKeyCheck,
      timeoutMs: inputs.connectTimeoutSeconds * 1000,
      proxyCommand: inputs.proxyCommand,
      compressTarget: inputs.source?.kind === 'plan'
    },
    fleet: {
      parallel: inputs.parallel,
      failFast: inputs.failFast,
      rollout: inputs.rollout,
      rollbackFleet: inputs.rollbackFleet,
      signingKey: inputs.signingKey
    },
    diffAgainst: inputs.diffAgainst,
    timeoutSeconds: inputs.timeoutSeconds,
    // readInputs refuses publish-to without signing-key.
    publish:
      inputs.publish && inputs.signingKey
        ? { ...inputs.publish, rollout: inputs.rollout, signingKey: inputs.signingKey }
        : undefined,
    machines: machineSettings(inputs),
    // A flake's or configuration.nix's one machine has its target in the inputs: planned now, so
    // its warnings come first and its connection can be dialled during the build.
    single:
      source.kind === 'network' || source.kind === 'plan' ? undefined : makePlan(machineSettings(inputs))
  }
}

/** The inputs a machine's plan is made of, and nothing else (no token, no signing key). */
function machineSettings(i: Inputs): MachineSettings {
  return {
    mode: i.mode,
    target: i.target,
    targetOverride: i.targetOverride,
    sshKey: i.sshKey,
    knownHosts: i.knownHosts,
    insecureSkipHostKeyCheck: i.insecureSkipHostKeyCheck,
    jumpHosts: i.jumpHosts,
    jumpHostKeys: i.jumpHostKeys,
    healthChecks: i.healthChecks,
    magicRollback: i.magicRollback,
    sudo: i.sudo,
    reboot: i.reboot,
    rebootTimeoutSeconds: i.rebootTimeoutSeconds,
    activationTimeoutSeconds: i.activationTimeoutSeconds,
    confirmTimeoutSeconds: i.confirmTimeoutSeconds,
    healthTimeoutSeconds: i.healthTimeoutSeconds,
    connectTimeoutSeconds: i.connectTimeoutSeconds,
    lockTimeoutSeconds: i.lockTimeoutSeconds,
    keepGenerations: i.keepGenerations,
    compression: i.compression,
    substituteOnDestination: i.substituteOnDestination
  }
}

/** The runner's Nix settings that are secrets: github-token as access-tokens, if given. */
function runnerSecretConfig(inputs: Inputs): string | undefined {
  if (!inputs.githubToken) return undefined
  const refs = [
    inputs.flake?.ref,
    inputs.diffAgainst && 'flake' in inputs.diffAgainst ? inputs.diffAgainst.flake.ref : undefined
  ]
  return githubAccessConfig(
    inputs.githubToken,
    refs.filter((r): r is string => r !== undefined)
  )
}

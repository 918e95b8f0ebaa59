/**
 * A fleet past one job (issue #35, docs/design/fleet-fanout.md): the build job's plan of shards,
 * which later jobs read with `fromJSON` (a matrix of shards, each deployed by a job of its own from
 * the binary cache the build published to). Pure: the JSON is made here and read back here.
 */
import type { Rollout } from '../rollout'
import { isValidUser, parseHostAddress } from '../ssh/address'
import type { BootFile, BootIdentity } from './boot'
import { DeployUserFacts, deployUserFactsProblem } from './deploy-user-facts'
import { isStorePath } from './store-path'
import { publishUriProblem } from './store-uri'

/**
 * One machine as the plan carries it: what a shard job needs to deploy it without evaluating or
 * building (its closure's paths it asks the cache for; its boot facts the build read).
 */
export interface PlannedMachine {
  name: string
  storePath: string
  /** The platform it runs (nixpkgs.hostPlatform). */
  system: string
  host: string
  port: number
  user: string
  tags: string[]
  /** Its kernel, initrd, modules and parameters: does its deploy need a reboot? */
  boot?: BootIdentity
  bootFiles?: BootFile[]
  /** Its boot trial's protocol (nixos/boot-trial.nix), if it has one. */
  bootTrialProtocol?: number
  /** What a deploy user's gate checks of its system (a plan of an earlier release lacks it). */
  deployUser?: DeployUserFacts
}

/** A job's share of the fleet; `needs` names the shards it must wait for (the canary). */
export interface Shard {
  id: string
  machines: string[]
}

/** A binary cache the paths were published to (publish-to), and the key they are signed with. */
export interface BinaryCache {
  uri: string
  publicKey: string
}

/** A deploy plan's id: random, made by the build job; the records its shards leave carry it. */
export const PLAN_ID_PATTERN = /^[0-9a-f]{16}$/

export interface DeployPlanDoc {
  /** The plan's format: a shard job refuses a plan of another. */
  version: 1
  /**
   * This plan among others: the record a shard job leaves on each machine carries it
   * (src/target/plan-record.ts), so the report job tells this plan's deploys from earlier ones.
   */
  id: string
  /** Where the build published the closures, and the public key they are signed with. */
  cache: BinaryCache
  /** The commit the build job built (GITHUB_SHA), when it ran in GitHub Actions. */
  commit?: string
  machines: PlannedMachine[]
  /** `canary` first when the rollout is canary; then 1..N. */
  shards: Shard[]
  /** `strategy.matrix` of the shard jobs (`fromJSON(...).matrix`): every shard but the canary. */
  matrix: { shard: string[] }
}

/**
 * Splits the machines into `count` shards of sizes differing by at most one, in the fleet's order
 * (a batch rollout keeps its order within and across shards); with `rollout: canary`, the first
 * machine is a shard of its own, `canary`, which the matrix leaves out (its job runs first).
 */
export function planShards(
  machines: PlannedMachine[],
  count: number,
  rollout: Rollout,
  cache: DeployPlanDoc['cache'],
  id: string,
  commit?: string
): DeployPlanDoc {
  const rest = [...machines]
  const shards: Shard[] = []
  if (rollout.kind === 'canary' && rest.length > 1)
    shards.push({ id: 'canary', machines: [rest.shift()!.name] })
  const n = Math.min(count, rest.length)
  let next = 0
  for (let i = 0; i < n; i++) {
    const size = Math.floor(rest.length / n) + (i < rest.length % n ? 1 : 0)
    shards.push({ id: String(i + 1), machines: rest.slice(next, next + size).map(m => m.name) })
    next += size
  }
  return {
    version: 1,
    id,
    cache,
    ...(commit ? { commit } : {}),
    machines,
    shards,
    matrix: { shard: shards.filter(s => s.id !== 'canary').map(s => s.id) }
  }
}

/** Why a planned machine cannot be deployed as the plan says, or undefined. */
function plannedMachineProblem(m: Partial<PlannedMachine>): string | undefined {
  if (typeof m !== 'object' || m === null) return 'deploy-plan: a machine is not an object'
  const name = JSON.stringify(m.name)
  if (typeof m.name !== 'string' || !/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(m.name))
    return `deploy-plan: a machine's name ${name} is not a machine name`
  if (typeof m.storePath !== 'string' || !isStorePath(m.storePath))
    return `deploy-plan: machine ${name} has no store path`
  if (typeof m.system !== 'string' || !/^[A-Za-z0-9_]+-[A-Za-z0-9_]+$/.test(m.system))
    return `deploy-plan: machine ${name} has no platform (system)`
  try {
    if (typeof m.host !== 'string') throw new Error('no host')
    parseHostAddress(m.host, 'host')
  } catch {
    return `deploy-plan: machine ${name} has no host to deploy to`
  }
  if (!Number.isInteger(m.port) || m.port! < 1 || m.port! > 65535)
    return `deploy-plan: machine ${name} has no port (1-65535)`
  if (typeof m.user !== 'string' || !isValidUser(m.user))
    return `deploy-plan: machine ${name} has no valid user`
  if (!Array.isArray(m.tags) || !m.tags.every(t => typeof t === 'string'))
    return `deploy-plan: machine ${name} has no list of tags`
  return bootFactsProblem(m, name)
}

/** The facts the build read of its system (all optional): of the types a deploy reads them as. */
function bootFactsProblem(m: Partial<PlannedMachine>, name: string): string | undefined {
  const strings = (o: unknown): boolean =>
    typeof o === 'object' && o !== null && Object.values(o).every(v => typeof v === 'string')
  if (m.boot !== undefined && !strings(m.boot))
    return `deploy-plan: machine ${name} has boot facts that are not`
  const files = m.bootFiles
  if (
    files !== undefined &&
    !(Array.isArray(files) && files.every(f => typeof f?.name === 'string' && Number.isFinite(f?.bytes)))
  )
    return `deploy-plan: machine ${name} has boot files that are not`
  if (m.bootTrialProtocol !== undefined && !Number.isInteger(m.bootTrialProtocol))
    return `deploy-plan: machine ${name} has a boot trial protocol that is not one`
  const deployUser = m.deployUser === undefined ? undefined : deployUserFactsProblem(m.deployUser)
  if (deployUser) return `deploy-plan: machine ${name}'s deployUser ${deployUser}`
  return undefined
}

/**
 * The machines of one shard of the plan (every machine of the plan when `shard` is empty), or why
 * there are none.
 */
export function shardMachines(plan: DeployPlanDoc, shard: string): PlannedMachine[] | string {
  if (shard === '') return plan.machines
  const found = plan.shards.find(s => s.id === shard)
  if (!found)
    return `shard ${JSON.stringify(shard)} is not a shard of deploy-plan (its shards: ${plan.shards.map(s => s.id).join(', ') || 'none'})`
  return found.machines.map(n => plan.machines.find(m => m.name === n)!)
}

/** The plan as a shard job reads it back: a problem for every way it is not one (none: it is). */
export function deployPlanProblems(text: string): { plan?: DeployPlanDoc; problems: string[] } {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (e) {
    return { problems: [`deploy-plan is not JSON: ${e instanceof Error ? e.message : String(e)}`] }
  }
  const plan = value as Partial<DeployPlanDoc>
  const problems: string[] = []
  if (plan?.version !== 1) problems.push('deploy-plan is not a plan of this version (version 1)')
  if (!Array.isArray(plan?.machines) || !Array.isArray(plan?.shards))
    problems.push('deploy-plan has no machines or shards')
  if (problems.length > 0) return { problems }
  if (typeof plan.id !== 'string' || !PLAN_ID_PATTERN.test(plan.id))
    problems.push("deploy-plan has no id (16 hex digits): make it again with this action's build job")
  if (plan.commit !== undefined && (typeof plan.commit !== 'string' || !/^[0-9a-f]{7,64}$/.test(plan.commit)))
    problems.push('deploy-plan: its commit is not a commit id')
  if (typeof plan.cache?.uri !== 'string' || publishUriProblem(plan.cache.uri))
    problems.push('deploy-plan has no binary cache URI (cache.uri, as publish-to took it)')
  if (
    typeof plan.cache?.publicKey !== 'string' ||
    !/^[A-Za-z0-9._-]+:[A-Za-z0-9+/=]+$/.test(plan.cache.publicKey)
  )
    problems.push('deploy-plan has no public key of its cache (cache.publicKey, NAME:base64)')
  for (const m of plan.machines!) {
    const problem = plannedMachineProblem(m)
    if (problem) problems.push(problem)
  }
  if (problems.length > 0) return { problems }
  const shardsWellFormed = plan.shards!.every(
    s =>
      typeof s?.id === 'string' && Array.isArray(s.machines) && s.machines.every(n => typeof n === 'string')
  )
  if (!shardsWellFormed) return { problems: ['deploy-plan has a shard without an id or a list of machines'] }
  const names = new Set(plan.machines!.map(m => m.name))
  if (names.size !== plan.machines!.length) problems.push('deploy-plan names a machine twice')
  const shared = sharedTargetProblem(plan.machines!)
  if (shared) problems.push(`deploy-plan: ${shared}`)
  for (const s of plan.shards!)
    for (const m of s.machines)
      if (!names.has(m))
        problems.push(`deploy-plan: shard ${s.id} names ${JSON.stringify(m)}, which it does not plan`)
  return problems.length > 0 ? { problems } : { plan: plan as DeployPlanDoc, problems }
}

/**
 * Two machines at one target (host and port): each deploy would replace the other's system there,
 * one after the other under its lock, and both would pass. Undefined when every target is its own.
 */
export function sharedTargetProblem(
  machines: ReadonlyArray<{ name: string; host: string; port: number }>
): string | undefined {
  const byTarget = new Map<string, string[]>()
  for (const m of machines) {
    const at = `${m.host.toLowerCase()}:${m.port}`
    byTarget.set(at, [...(byTarget.get(at) ?? []), m.name])
  }
  const shared = [...byTarget].filter(([, names]) => names.length > 1)
  if (shared.length === 0) return undefined
  return shared
    .map(
      ([at, names]) =>
        `${names.join(' and ')} are the same target (${at}): each would replace the other's system`
    )
    .join('; ')
}

/**
 * A fleet past one job (issue #35, docs/design/fleet-fanout.md): the build job's plan of shards,
 * which later jobs read with `fromJSON` (a matrix of shards, each deployed by a job of its own from
 * the binary cache the build published to). Pure: the JSON is made here and read back here.
 */
import type { Rollout } from './rollout'

/** One machine as the plan carries it: what a shard job needs to deploy it without evaluating. */
export interface PlannedMachine {
  name: string
  storePath: string
  host: string
  port: number
  user: string
  tags: string[]
}

/** A job's share of the fleet; `needs` names the shards it must wait for (the canary). */
export interface Shard {
  id: string
  machines: string[]
}

export interface DeployPlanDoc {
  /** The plan's format: a shard job refuses a plan of another. */
  version: 1
  /** Where the build published the closures, and the public key they are signed with. */
  cache: { uri: string; publicKey: string }
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
  cache: DeployPlanDoc['cache']
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
    cache,
    machines,
    shards,
    matrix: { shard: shards.filter(s => s.id !== 'canary').map(s => s.id) }
  }
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
  const names = new Set(plan.machines!.map(m => m.name))
  for (const s of plan.shards!)
    for (const m of s.machines)
      if (!names.has(m))
        problems.push(`deploy-plan: shard ${s.id} names ${JSON.stringify(m)}, which it does not plan`)
  return problems.length > 0 ? { problems } : { plan: plan as DeployPlanDoc, problems }
}

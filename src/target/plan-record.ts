/**
 * What a deploy plan's shard job leaves on each machine it deploys (issue #35): which plan and
 * shard, how far it got, and, once it deployed, what the machine ran before. The fleet's report
 * job reads it back (probe.sh prints it with every state read): it tells a shard that failed on a
 * machine from one that stopped while deploying it (cancelled, its runner lost) or never reached
 * it, and with rollback-fleet it is what puts a deployed machine back. Root writes it, in
 * /nix/var/nix-deploy-action (record.sh, for plan-record.sh and wrap-up.sh); the report still
 * checks every value it reads.
 * Pure: the text is made and read here.
 */
import { PLAN_ID_PATTERN } from '../nix/deploy-plan'
import { isStorePath } from '../nix/store-path'
import type { ShardOutcome } from '../report/report'

/** `unchanged`: it ran the plan's system already (nothing of this plan to undo there). */
export type PlanRecordState = 'started' | 'deployed' | 'unchanged' | 'failed' | 'rolled-back'
const STATES: readonly PlanRecordState[] = ['started', 'deployed', 'unchanged', 'failed', 'rolled-back']

/** Which plan a deploy belongs to, and where it ran: the same on every record of one shard job. */
export interface PlanStamp {
  plan: string
  /** The shard's id ('' : the whole plan in one job). */
  shard: string
  commit?: string
  /** "RUN_ID/ATTEMPT" in GitHub Actions. */
  run?: string
}

export interface PlanRecord extends PlanStamp {
  state: PlanRecordState
  /** The plan's system for this machine. */
  system: string
  /** The deploy's mode (switch, boot, test). */
  mode: string
  /** What the machine ran and would boot before this deploy (state deployed: the way back). */
  beforeCurrent?: string
  beforeProfile?: string
  beforeGeneration?: number
  /** The profile generation the deploy made or reused, and whether it made it. */
  generation?: number
  createdNew?: boolean
  /** The deploy rebooted it: an activation cannot undo that (rollback-fleet leaves it). */
  rebooted?: boolean
  /** Why it failed or rolled back: one line. */
  message?: string
  /** Put back by rollback-fleet (a shard job's own, or the report job's): its own deploy had succeeded. */
  byRollbackFleet?: boolean
}

/** A value as one printable line of at most `max` characters (a message is free text). */
function oneLine(v: string, max = 300): string {
  // eslint-disable-next-line no-control-regex
  const flat = v.replace(/[\u0000-\u001f\u007f-\u009f]+/g, ' ').trim()
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat
}

/** The record as the file holds it: key=value lines (record.sh writes stdin as it is). */
export function formatPlanRecord(r: PlanRecord): string {
  const fields: Array<[string, string | number | boolean | undefined]> = [
    ['plan', r.plan],
    ['shard', r.shard],
    ['commit', r.commit],
    ['run', r.run],
    ['state', r.state],
    ['system', r.system],
    ['mode', r.mode],
    ['before-current', r.beforeCurrent],
    ['before-profile', r.beforeProfile],
    ['before-generation', r.beforeGeneration],
    ['generation', r.generation],
    ['created-new', r.createdNew === undefined ? undefined : r.createdNew ? 1 : 0],
    ['rebooted', r.rebooted ? 1 : undefined],
    ['message', r.message],
    ['by-rollback-fleet', r.byRollbackFleet ? 1 : undefined],
    // Last: a record cut short (a write that did not finish) lacks it and is not read.
    ['end', 1]
  ]
  return fields
    .filter(([, v]) => v !== undefined && v !== '')
    .map(([k, v]) => `${k}=${oneLine(String(v))}\n`)
    .join('')
}

/**
 * The record from probe.sh's `plan-*` lines; undefined when there is none or it does not hold
 * together (a value of the wrong kind is dropped, not trusted: the way back must be store paths).
 */
export function parsePlanRecord(kv: Map<string, string>): PlanRecord | undefined {
  const get = (k: string): string | undefined => kv.get(`plan-${k}`) || undefined
  const storePath = (k: string): string | undefined => {
    const v = get(k)
    return v && isStorePath(v) ? v : undefined
  }
  const count = (k: string): number | undefined => {
    const v = get(k)
    return v && /^[0-9]{1,9}$/.test(v) ? Number(v) : undefined
  }
  const plan = get('plan')
  const state = get('state') as PlanRecordState | undefined
  const system = storePath('system')
  const mode = get('mode')
  if (!plan || !PLAN_ID_PATTERN.test(plan) || !state || !STATES.includes(state) || !system || !mode)
    return undefined
  if (get('end') !== '1') return undefined
  if (!/^[a-z-]+$/.test(mode)) return undefined
  const created = get('created-new')
  return {
    plan,
    shard: oneLine(get('shard') ?? '', 40),
    commit: /^[0-9a-f]{7,64}$/.test(get('commit') ?? '') ? get('commit') : undefined,
    run: /^[0-9]+\/[0-9]+$/.test(get('run') ?? '') ? get('run') : undefined,
    state,
    system,
    mode,
    beforeCurrent: storePath('before-current'),
    beforeProfile: storePath('before-profile'),
    beforeGeneration: count('before-generation'),
    generation: count('generation'),
    createdNew: created === '1' ? true : created === '0' ? false : undefined,
    rebooted: get('rebooted') === '1' ? true : undefined,
    message: get('message') === undefined ? undefined : oneLine(get('message')!),
    byRollbackFleet: get('by-rollback-fleet') === '1' ? true : undefined
  }
}

/** The stamp of this job's records: the plan, its shard, and the run (GITHUB_RUN_ID/ATTEMPT). */
export function planStamp(
  plan: { id: string; commit?: string },
  shard: string,
  env: NodeJS.ProcessEnv = process.env
): PlanStamp {
  const run = env.GITHUB_RUN_ID ? `${env.GITHUB_RUN_ID}/${env.GITHUB_RUN_ATTEMPT ?? '1'}` : undefined
  return { plan: plan.id, shard, commit: plan.commit, run }
}

/**
 * What a machine's record says of its shard's deploy, for a report's machine that does not run the
 * plan's system (see ShardOutcome).
 */
export function shardOutcome(planId: string, record: PlanRecord | undefined): ShardOutcome {
  if (!record || record.plan !== planId) return 'not-reached'
  if (record.state === 'started') return 'stopped'
  return record.state === 'deployed' || record.state === 'unchanged' ? 'moved-on' : record.state
}

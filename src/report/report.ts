import { Phase } from '../errors'
import { Mode } from '../modes'
import type { StoreCacheRestore } from '../cache/store-cache'
import { ClosureDiff } from './diff'

export const RESULTS = [
  'deployed',
  'unchanged',
  'built',
  'dry-activated',
  'rolled-back',
  'failed',
  'skipped'
] as const
export type Result = (typeof RESULTS)[number]

export interface PhaseTiming {
  phase: Phase
  ms: number
}

/**
 * mode report: what a machine's deploy-plan record says of its shard, when it does not run the
 * plan's system (src/target/plan-record.ts): the shard failed on it, rolled it back, stopped while
 * deploying it (cancelled, or its runner lost), deployed it but it changed since, or never reached
 * it (no record of this plan).
 */
export type ShardOutcome = 'failed' | 'rolled-back' | 'stopped' | 'moved-on' | 'not-reached'

/** Everything the run learned, filled in phase by phase; outputs and the summary are rendered from it. */
export interface DeployReport {
  result?: Result
  requestedMode?: Mode
  mode?: Mode
  flake?: string
  host?: string
  storePath?: string
  previousStorePath?: string
  changed?: boolean
  closureSize?: number
  closurePaths?: number
  copiedBytes?: number
  copiedPaths?: number
  wireBytes?: number
  /** substitute-on-destination: what the target fetched from its own substituters (and substitutedFrom). */
  substitutedPaths?: number
  substitutedBytes?: number
  /** The binary cache of a deploy plan the target fetched from too. */
  substitutedFrom?: string
  compression?: string
  generation?: number
  builtDerivations?: number
  platform?: string
  binfmt?: string
  activationLog?: string
  rolledBackTo?: string
  /**
   * Set when this machine's deploy succeeded and rollback-fleet put it back because another
   * machine failed (result rolled-back): why, naming the machines that failed.
   */
  fleetRollback?: string
  /**
   * Set when this machine's own deploy failed after its activation and rollback-fleet put it back
   * (result rolled-back, its error kept): why.
   */
  failureRolledBack?: string
  /** A deploy plan's shard this machine is in (a shard job's, mode report's). */
  shard?: string
  /**
   * mode report: what the machine's record says of its shard's deploy (src/target/plan-record.ts),
   * `deployed` when it runs the plan's system.
   */
  shardOutcome?: ShardOutcome | 'deployed'
  /** How long the run waited for another deploy's lock on the target. */
  lockWaitMs?: number
  healthChecks?: string
  /** How the deploy was confirmed (magic rollback), e.g. "over a new connection". */
  confirmed?: string
  deletedGenerations?: number[]
  /** Package diff against what the target runs (or diff-against in build mode). */
  diff?: ClosureDiff
  diffBaseline?: string
  /** The store cache restore: undefined when the cache is off. */
  cache?: StoreCacheRestore
  /**
   * Whether the new system boots another kernel, initrd, modules or kernel parameters than the
   * target booted (or, for a build, than diff-against): undefined when unknown.
   */
  needsReboot?: boolean
  /**
   * How long the reboot into the new system took (reboot: auto or always), when there was one:
   * from the reboot to the deploy's first command on the new boot.
   */
  rebootMs?: number
  /** On trial: from that command to the trial's confirmation (the keys and health checks). */
  rebootConfirmedMs?: number
  /**
   * A reboot on trial (the target has nixos/boot-trial.nix): confirmed by this run, or the target
   * went back to its previous system (unreachable after the boot, or its checks failed).
   */
  bootTrial?: 'confirmed' | 'went-back'
  /** The trial settled was an earlier run's (cancelled after its reboot into this same system). */
  earlierTrial?: boolean
  /** The new system was booted once (a one-shot entry), the previous one the default until confirmed. */
  bootOnce?: boolean
  /** dry-activate: what switch-to-configuration says it would do to units. */
  dryActivate?: Array<{ action: string; units: string[] }>
  timings: PhaseTiming[]
  warnings: string[]
  error?: { message: string; hint: string; phase: Phase; details?: string }
  /** The machine's name in a network file. */
  machine?: string
  /** Several machines (a network): one report each; the fields above then describe the run. */
  /** The machine's deployment.tags (network files). */
  tags?: string[]
  published?: Published
  hosts?: Array<{ machine: string; report: DeployReport }>
}

/** What the build phase learned of one machine (src/build.ts fills it; assemble.ts reports it). */
export interface MachineBuildFacts {
  /** Its name in a network file ('' otherwise). */
  name: string
  tags?: string[]
  storePath: string
  platform: string
  requestedMode: Mode
  mode: Mode
  /** user@host:port, for a machine the run deploys. */
  host?: string
  closureSize?: number
  closurePaths?: number
  /** Its own warnings (its plan's, ignored NixOps options). */
  warnings: string[]
}

/** What the build phase learned of the run, filled as it goes (a failed build reports what it got to). */
export interface BuildFacts {
  /** The source's label (a flake reference, a file). */
  source: string
  requestedMode: Mode
  /** The one plan's mode and host (a flake or configuration.nix), known before the build. */
  mode: Mode
  host?: string
  /** The run's warnings: its one plan's, the store cache's, the daemon's. */
  warnings: string[]
  machines: MachineBuildFacts[]
  cache?: StoreCacheRestore
  binfmt?: string
  builtDerivations?: number
  /** A build's package diff against diff-against (mode build, one machine). */
  diff?: { diff: ClosureDiff; baseline: string; needsReboot?: boolean }
  published?: Published
}

/** publish-to: where the build published the closures, how long it took, the deploy plan (JSON). */
export interface Published {
  uri: string
  ms: number
  plan: string
}

/** Worst first: what the single-valued outputs describe when several machines were deployed. */
const SEVERITY: Result[] = [
  'failed',
  'rolled-back',
  'skipped',
  'deployed',
  'dry-activated',
  'built',
  'unchanged'
]

/** Whether a machine's result is a failure (rolled back counts: what was asked did not happen). */
export function failedResult(r: DeployReport): boolean {
  return r.result === 'failed' || r.result === 'rolled-back'
}

/** Why rollback-fleet put this machine back (another machine failed, or its own deploy did after activating); undefined: it did not. */
export function fleetRollbackWhy(r: DeployReport): string | undefined {
  return r.fleetRollback ?? r.failureRolledBack
}

/** A fleet's failures, and apart from them the machines rollback-fleet put back. */
export function fleetCounts(reports: DeployReport[]): { failed: number; reverted: number } {
  const reverted = reports.filter(r => r.fleetRollback !== undefined).length
  return { failed: reports.filter(failedResult).length - reverted, reverted }
}

export function worstReport(reports: DeployReport[]): DeployReport {
  const rank = (r: DeployReport): number => {
    const i = SEVERITY.indexOf(r.result ?? 'failed')
    return i < 0 ? 0 : i
  }
  return reports.reduce((worst, r) => (rank(r) < rank(worst) ? r : worst))
}

/** The `results` output: per machine (or host), its result, store path and generation. */
export function resultsOf(r: DeployReport): Record<
  string,
  {
    host: string
    result: string
    'store-path': string
    generation: string
    changed: string
    'needs-reboot': string
    'copied-bytes': string
    shard: string
    'shard-outcome': string
  }
> {
  const hosts = r.hosts ?? [{ machine: '', report: r }]
  return Object.fromEntries(
    hosts.map(({ machine, report }) => {
      const o = outputsOne(report)
      return [
        machine || report.machine || report.host || 'configuration',
        {
          host: report.host ?? '',
          result: o.result,
          'store-path': o['store-path'],
          generation: o.generation,
          changed: o.changed,
          'needs-reboot': o['needs-reboot'],
          'copied-bytes': o['copied-bytes'],
          shard: report.shard ?? '',
          'shard-outcome': report.shardOutcome ?? ''
        }
      ]
    })
  )
}

/**
 * The action's outputs (action.yml), all strings; absent facts are empty strings. With several
 * machines the single-valued outputs describe the worst result; `results` has every machine.
 */
export function outputsOf(r: DeployReport): Record<string, string> {
  const one =
    r.hosts && r.hosts.length > 0 ? outputsOne(worstReport(r.hosts.map(h => h.report))) : outputsOne(r)
  return {
    ...one,
    'cache-hit': String(r.cache?.hit ?? false),
    results: JSON.stringify(resultsOf(r)),
    'deploy-plan': r.published?.plan ?? ''
  }
}

function outputsOne(r: DeployReport): Record<string, string> {
  const s = (v: string | number | boolean | undefined): string => (v === undefined ? '' : String(v))
  return {
    result: s(r.result),
    'store-path': s(r.storePath),
    'previous-store-path': s(r.previousStorePath),
    changed: s(r.changed ?? false),
    'closure-size': s(r.closureSize),
    'copied-bytes': s(
      r.copiedBytes ?? (r.result && r.result !== 'built' && r.result !== 'failed' ? 0 : undefined)
    ),
    generation: s(r.generation),
    'needs-reboot': s(r.needsReboot),
    'cache-hit': s(r.cache?.hit ?? false)
  }
}

/** What one machine's deploy found and did (src/deploy returns it; the report takes it as it is). */
export type MachineResult = Pick<
  DeployReport,
  | 'result'
  | 'previousStorePath'
  | 'changed'
  | 'copiedBytes'
  | 'copiedPaths'
  | 'wireBytes'
  | 'substitutedPaths'
  | 'substitutedBytes'
  | 'substitutedFrom'
  | 'compression'
  | 'generation'
  | 'activationLog'
  | 'rolledBackTo'
  | 'lockWaitMs'
  | 'healthChecks'
  | 'confirmed'
  | 'deletedGenerations'
  | 'diff'
  | 'diffBaseline'
  | 'dryActivate'
  | 'needsReboot'
  | 'rebootMs'
  | 'bootTrial'
  | 'rebootConfirmedMs'
  | 'earlierTrial'
  | 'bootOnce'
>

/** Writes a machine's deploy result into its report: the one place the deploy's facts enter it. */
export function applyMachineResult(report: DeployReport, result: MachineResult): void {
  for (const [k, v] of Object.entries(result))
    if (v !== undefined) (report as unknown as Record<string, unknown>)[k] = v
}

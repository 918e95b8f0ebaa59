import * as core from '@actions/core'
import { randomBytes } from 'crypto'
import * as os from 'os'
import * as path from 'path'
import { PendingSave, restoreForRun, storeCacheKeys } from './cache/store-cache'
import { BuiltSystem } from './deploy/deploy'
import { LoadedKey, loadKeys } from './deploy/deployment-keys'
import { ActionError, errorMessage, Phase } from './errors'
import { BinfmtSetting, ensureBinfmt } from './nix/binfmt-setup'
import { StoreInfo, untrustedEmulationError } from './nix/daemon'
import { bootTrialProtocol, needsReboot, readBootFiles, readBootIdentity } from './nix/boot'
import { readDeployUserFacts } from './nix/deploy-user-facts'
import { totalNarSize } from './nix/closure'
import { MachineEvaluation, selectMachines } from './nix/legacy'
import type { Baseline } from './nix/source'
import { RunnerNix } from './nix/nix'
import { DEFAULT_PORT, machineTarget, MachinePlan, planMachine, RunPlan } from './plan'
import { planShards, PlannedMachine, shardMachines, sharedTargetProblem } from './nix/deploy-plan'
import type { Source } from './nix/source'
import { publishClosures } from './cache/publish'
import { ClosureEntry, diffClosures } from './report/diff'
import { formatBytes } from './log/format'
import { BuildFacts, MachineBuildFacts } from './report/report'
import { info, logWarning } from './log/untrusted'

/** The post step's state key for the store cache to save. */
export const STATE_CACHE = 'storeCache'

type Phased = <T>(p: Phase, fn: () => Promise<T>) => Promise<T>

/** One machine of the run: a flake's or configuration.nix's system, or a network's machine. */
export interface Machine {
  evaluation: MachineEvaluation
  plan: MachinePlan
  /** deployment.keys with their content, read (and masked) before anything untrusted is printed. */
  keys: LoadedKey[]
  built?: BuiltSystem
  /** What its report says of its build (src/report/assemble.ts makes the report). */
  facts: MachineBuildFacts
}

/**
 * What the build phase found and did, filled as it goes: a build that fails still leaves what it
 * got to (its warnings, the cache's restore) for the report.
 */
export interface BuildResult {
  facts: BuildFacts
  machines: Machine[]
  /** The runner's Nix as the build used it (binfmt's settings added): what later phases copy with. */
  nix: RunnerNix
}

/** A build's result before it starts: the run's plan is known, nothing else. */
export function startBuild(run: RunPlan, nix: RunnerNix): BuildResult {
  const single = run.single
  return {
    facts: {
      source: run.source.label,
      requestedMode: run.requestedMode,
      mode: single?.mode ?? run.requestedMode,
      host: single && hostOf(single),
      // Its warnings (e.g. a fork PR's dry-activate becoming a build) come before the build's output.
      warnings: single ? logged(single.warnings) : [],
      machines: []
    },
    machines: [],
    nix
  }
}

function hostOf(plan: MachinePlan): string | undefined {
  return plan.mode === 'build' ? undefined : plan.target.label.replace(/^target /, '')
}

/** Warnings as a log line each now (src/report/publish.ts annotates them at the end). */
function logged(warnings: string[], into: string[] = []): string[] {
  for (const w of warnings) logWarning(into, w)
  return into
}

/** Evaluates what the source describes: one system, or the selected machines of a network. */
async function evaluateSource(run: RunPlan, nix: RunnerNix, tempDir: string): Promise<MachineEvaluation[]> {
  const src = run.source
  if (src.kind === 'flake') {
    const e = await nix.evaluate(src.flake)
    return [{ ...e, name: '', keys: [], ignored: [] }]
  }
  if (src.kind === 'plan') return plannedEvaluations(src)
  const expr = path.join(tempDir, 'evaluate.nix')
  if (src.kind === 'configuration') return nix.evaluateLegacy(src, [], expr)
  const names = await nix.networkMachineNames(src, expr)
  // Tags need each machine's modules evaluated (deployment.tags only): only when a pattern is one.
  const tags = src.machines.some(p => p.startsWith('@')) ? await nix.networkMachineTags(src, names, expr) : {}
  const selected = selectMachines(names, src.machines, tags)
  const overrides = [
    run.machines.target && 'target-host',
    run.machines.targetOverride.port !== undefined && 'target-port',
    run.machines.targetOverride.user !== undefined && 'target-user'
  ].filter(Boolean)
  if (overrides.length > 0 && selected.length > 1)
    throw new ActionError(
      `${overrides.join(', ')} ${overrides.length > 1 ? 'are' : 'is'} set, but the network has ${selected.length} machines selected (${selected.join(', ')})`,
      'The file gives each machine its host, port and user; set these inputs only when machines selects one machine (they then override the file), or leave them empty.',
      'inputs'
    )
  return nix.evaluateLegacy(src, selected, expr)
}

/** A deploy plan's shard as evaluations: what the build job found, nothing evaluated here. */
function plannedEvaluations(src: Extract<Source, { kind: 'plan' }>): MachineEvaluation[] {
  const machines = shardMachines(src.plan, src.shard)
  // readInputs checked the shard.
  if (typeof machines === 'string') throw new ActionError(machines, 'Give a shard of the plan.', 'inputs')
  return machines.map(m => ({
    name: m.name,
    outPath: m.storePath,
    drvPath: '',
    buildSystem: m.system,
    hostSystem: m.system,
    targetHost: m.host,
    targetPort: m.port,
    targetUser: m.user,
    tags: m.tags,
    keys: [],
    ignored: []
  }))
}

/**
 * The runner's half: evaluates the source, plans each machine (its warnings first), reads every
 * machine's keys (masked before anything untrusted is printed), restores the store cache, sets up
 * binfmt, builds every system in one Nix invocation and lists their closures. Nothing here connects.
 */
export async function buildMachines(
  run: RunPlan,
  result: BuildResult,
  tempDir: string,
  phase: Phased
): Promise<void> {
  result.machines = await phase('build', () => evaluateMachines(run, result.nix, tempDir))
  result.facts.machines = result.machines.map(m => m.facts)
  // Every secret is registered before the build prints anything untrusted (see printUntrusted):
  // the keys are read now, for the machines whose mode uploads them.
  for (const m of result.machines)
    if (m.plan.mode !== 'build' && m.plan.mode !== 'report' && m.plan.goal.uploadsKeys)
      m.keys = await phase('inputs', () => loadKeys(m.evaluation.name || 'configuration', m.evaluation.keys))
  // mode report only looks at what the machines run: it needs no closure.
  if (run.requestedMode === 'report') return
  if (run.source.kind === 'plan')
    await phase('build', () => closuresFromCache(run.source as PlanSource, result))
  else await phase('build', () => buildAll(run, result, tempDir))
  if (run.publish) await phase('build', () => publish(run.publish!, run, result))
  const [only] = result.machines
  if (result.machines.length === 1 && only.plan.mode === 'build' && run.diffAgainst)
    await phase('build', () => diffAgainst(run.diffAgainst!, result, only, tempDir))
}

/** publish-to: every closure to the binary cache, signed; the deploy plan of its shards. */
async function publish(
  to: NonNullable<RunPlan['publish']>,
  run: RunPlan,
  result: BuildResult
): Promise<void> {
  // Planned first: a machine the plan cannot carry fails the build before anything is uploaded.
  const machines = result.machines.map(m => plannedMachine(run, m))
  core.startGroup(`Publish to ${to.uri}`)
  const toplevels = result.machines.map(m => m.evaluation.outPath)
  const ms = await publishClosures(result.nix, to.uri, toplevels, to.signingKey).finally(() =>
    core.endGroup()
  )
  const plan = planShards(
    machines,
    to.shards,
    to.rollout,
    { uri: to.uri, publicKey: to.signingKey.publicKey },
    randomBytes(8).toString('hex'),
    process.env.GITHUB_SHA || undefined
  )
  info(`Published ${toplevels.length} closures to ${to.uri} in ${(ms / 1000).toFixed(1)} s`)
  result.facts.published = { uri: to.uri, ms, plan: JSON.stringify(plan) }
}

/** A machine as the deploy plan carries it: where a shard job finds it, without evaluating. */
function plannedMachine(run: RunPlan, m: Machine): PlannedMachine {
  const e = m.evaluation
  if (e.keys.length > 0)
    throw new ActionError(
      `${e.name}: deployment.keys (${e.keys.map(k => k.name).join(', ')}) cannot travel in a deploy plan: a job output holds no secrets`,
      'Deploy the machines with deployment.keys from one job (without publish-to), or give them their secrets another way (e.g. agenix or sops-nix on the target).',
      'build'
    )
  const target = run.source.kind === 'network' ? machineTarget(run.machines, e) : run.machines.target
  if (!target)
    throw new ActionError(
      `${e.name || 'the configuration'} has no target to put in the deploy plan`,
      'Give target-host (a flake or configuration.nix), or deployment.targetHost in the network file: a shard job deploys each machine where the plan says.',
      'build'
    )
  return {
    // A flake's machine is named by its host (an IPv6 address made a name: its colons are not).
    name: e.name || target.host.replace(/[^A-Za-z0-9_.-]/g, '-').replace(/^[.-]/, '_'),
    storePath: e.outPath,
    system: e.hostSystem,
    host: target.host,
    port: target.port ?? DEFAULT_PORT,
    user: target.user ?? 'root',
    tags: e.tags ?? [],
    boot: m.built?.boot,
    bootFiles: m.built?.bootFiles,
    bootTrialProtocol: m.built?.bootTrialProtocol,
    deployUser: m.built?.deployUser
  }
}

/** A build's package diff against diff-against; a failure here only costs the diff. */
async function diffAgainst(
  against: Baseline,
  result: BuildResult,
  m: Machine,
  tempDir: string
): Promise<void> {
  try {
    const baseline = await baselineClosure(result.nix, against, path.join(tempDir, 'baseline'))
    result.facts.diff = {
      diff: diffClosures(baseline.entries, m.built!.closure, {
        before: baseline.toplevel,
        after: m.built!.toplevel
      }),
      baseline: baseline.label,
      needsReboot: needsReboot(await readBootIdentity(baseline.toplevel), m.built!.boot)
    }
  } catch (e) {
    logWarning(result.facts.warnings, `no package diff: ${errorMessage(e)}`)
  }
}

type PlanSource = Extract<Source, { kind: 'plan' }>

/**
 * A shard of a deploy plan builds nothing: each machine's closure is listed from the plan's binary
 * cache (its .narinfo files, not its NARs), its boot facts are the plan's.
 */
async function closuresFromCache(src: PlanSource, result: BuildResult): Promise<void> {
  const { uri } = src.plan.cache
  info(`Deploying ${src.label} from ${uri}: nothing is evaluated or built here`)
  result.facts.builtDerivations = 0
  for (const m of result.machines) {
    const planned = src.plan.machines.find(p => p.name === m.evaluation.name)!
    const closure = await result.nix.closure(m.evaluation.outPath, uri)
    m.facts.closureSize = totalNarSize(closure)
    m.facts.closurePaths = closure.length
    info(
      `${m.evaluation.name}: ${m.evaluation.outPath}: closure ${formatBytes(m.facts.closureSize)} in ${closure.length} paths`
    )
    m.built = {
      toplevel: m.evaluation.outPath,
      hostSystem: m.evaluation.hostSystem,
      closure,
      boot: planned.boot,
      bootFiles: planned.bootFiles,
      bootTrialProtocol: planned.bootTrialProtocol,
      deployUser: planned.deployUser,
      cache: src.plan.cache
    }
  }
}

/** Evaluates the source and plans each machine. */
async function evaluateMachines(run: RunPlan, nix: RunnerNix, tempDir: string): Promise<Machine[]> {
  core.startGroup(`${run.source.kind === 'plan' ? 'Read' : 'Evaluate'} ${run.source.label}`)
  const evaluations = await evaluateSource(run, nix, tempDir).finally(() => core.endGroup())
  const machines = evaluations.map(e => {
    info(`${e.name ? `${e.name}: ` : ''}${e.outPath} (${e.hostSystem})`)
    const warnings = logged(
      e.ignored.map(
        option =>
          `${e.name}: ${option} is ignored: nix-deploy-action deploys over SSH to deployment.targetHost, and keeps no NixOps state`
      )
    )
    const plan = planMachine(run, e)
    // The run's one plan was logged before the build; a network machine's is its own.
    if (!run.single)
      logged(
        plan.warnings.map(w => (evaluations.length > 1 ? `${e.name}: ${w}` : w)),
        warnings
      )
    const facts: MachineBuildFacts = {
      name: e.name,
      tags: e.tags,
      storePath: e.outPath,
      platform: e.hostSystem,
      requestedMode: plan.requestedMode,
      mode: plan.mode,
      host: hostOf(plan),
      warnings
    }
    return { evaluation: e, plan, keys: [] as LoadedKey[], facts }
  })
  // (A build alone deploys nothing: placeholders shared by a network file's machines are its own.)
  if (run.source.kind === 'network' && (run.requestedMode !== 'build' || run.publish))
    refuseSharedTargets(run, evaluations)
  return machines
}

/**
 * A network file whose machines name one target twice (a copied entry): refused before anything is
 * built, when it is to be deployed or published. A machine whose target does not parse is left to
 * the step that needs it.
 */
function refuseSharedTargets(run: RunPlan, evaluations: MachineEvaluation[]): void {
  const targets = evaluations.flatMap(e => {
    try {
      return [{ name: e.name, ...machineTarget(run.machines, e) }]
    } catch {
      return []
    }
  })
  const problem = sharedTargetProblem(targets.map(t => ({ ...t, port: t.port ?? DEFAULT_PORT })))
  if (problem)
    throw new ActionError(
      `the network file's machines ${problem}`,
      'Fix deployment.targetHost (or deployment.targetPort) in the network file: each machine is a target of its own.',
      'inputs'
    )
}

/** Restores the store cache, sets up binfmt, builds every system, lists closures. */
async function buildAll(run: RunPlan, result: BuildResult, tempDir: string): Promise<void> {
  const { machines, facts } = result
  const first = machines[0].evaluation
  if (run.cache)
    facts.cache = await restoreForRun(result.nix, storeCacheKeys(run.cache, first.hostSystem), run.cache, w =>
      logWarning(facts.warnings, w)
    )
  const store = await daemonTrust(result.nix, facts.warnings)
  for (const buildSystem of [...new Set(machines.map(m => m.evaluation.buildSystem))])
    result.nix = await withBinfmt(result.nix, buildSystem, run.nix.binfmt, store, facts)
  const nix = result.nix
  const what =
    machines.length > 1
      ? `${machines.length} systems (${machines.map(m => m.evaluation.name).join(', ')})`
      : first.outPath
  core.startGroup(`Build ${what}`)
  // Build logs are the derivations' own output (a pull request's code): shown, never obeyed.
  const build = await nix
    .build(
      machines.map(m => m.evaluation.drvPath),
      what,
      path.join(tempDir, 'system')
    )
    .finally(() => core.endGroup())
  facts.builtDerivations = build.built.length
  // The post step saves the store cache, also when a deploy fails after this point.
  if (run.cache && facts.cache?.available && (build.built.length > 0 || !facts.cache.hit)) {
    const paths = [...machines.map(m => m.evaluation.outPath), ...(await nix.outputsOf(build.built))]
    const key = storeCacheKeys(run.cache, first.hostSystem).key
    const save: PendingSave = { key, paths, settings: run.cache.nixOptions, signed: !!run.cache.signingKey }
    core.saveState(STATE_CACHE, JSON.stringify(save))
  }
  for (const m of machines) await listClosure(nix, m)
}

/** binfmt for one build system; the Nix to build with (its settings added). */
async function withBinfmt(
  nix: RunnerNix,
  buildSystem: string,
  setting: BinfmtSetting,
  store: StoreInfo | undefined,
  facts: BuildFacts
): Promise<RunnerNix> {
  const binfmt = await ensureBinfmt(buildSystem, setting, w => logWarning(facts.warnings, w))
  facts.binfmt =
    binfmt.how === 'native' ? 'native' : binfmt.how === 'not-available' ? 'no emulation' : 'QEMU binfmt'
  info(binfmt.detail)
  if (store?.trusted === false && binfmt.nixSettings.some(([k]) => k === 'extra-platforms')) {
    const err = untrustedEmulationError(buildSystem, store, await nix.configuredPlatforms(), runnerUser())
    if (err) throw err
  }
  for (const [k, v] of binfmt.nixSettings) nix = nix.withSetting(k, v)
  return nix
}

/**
 * What the store says of this user, for a run that is not root (root is trusted by any daemon, and
 * a store root opens directly has no trust to check). A daemon that does not trust the user
 * ignores most client settings: the action's extra-platforms (checked before an emulated build,
 * see untrustedEmulationError) and the nix-options it names, warned about here.
 */
async function daemonTrust(nix: RunnerNix, warnings: string[]): Promise<StoreInfo | undefined> {
  if (process.getuid?.() === 0) return undefined
  const asked = await nix.storeInfo()
  if (!asked) return undefined
  const { info: store, ignored } = asked
  info(
    `Runner Nix: store ${store.url}${store.version ? ` (Nix ${store.version})` : ''}${store.trusted === undefined ? '' : store.trusted ? ', this user trusted' : ', this user not trusted'}`
  )
  const named = [
    ...ignored.settings.map(s => `nix-options ${s}`),
    ...ignored.substituters.map(s => `the substituter ${s}`)
  ]
  if (named.length > 0) {
    const w = `${named.join(', ')}: ignored by the nix-daemon, which does not trust ${runnerUser()}. Set ${named.length > 1 ? 'them' : 'it'} in the daemon's nix.conf (a substituter in trusted-substituters), or add ${runnerUser()} to trusted-users.`
    logWarning(warnings, w)
  }
  return store
}

function runnerUser(): string {
  try {
    return os.userInfo().username
  } catch {
    return `uid ${process.getuid?.() ?? '?'}`
  }
}

async function listClosure(nix: RunnerNix, m: Machine): Promise<void> {
  const closure = await nix.closure(m.evaluation.outPath)
  m.facts.closureSize = totalNarSize(closure)
  m.facts.closurePaths = closure.length
  info(
    `Built ${m.evaluation.name ? `${m.evaluation.name}: ` : ''}${m.evaluation.outPath}: closure ${formatBytes(m.facts.closureSize)} in ${closure.length} paths`
  )
  const boot = await readBootIdentity(m.evaluation.outPath)
  m.built = {
    toplevel: m.evaluation.outPath,
    hostSystem: m.evaluation.hostSystem,
    closure,
    boot,
    bootFiles: await readBootFiles(boot),
    bootTrialProtocol: await bootTrialProtocol(m.evaluation.outPath),
    deployUser: await readDeployUserFacts(m.evaluation.outPath)
  }
}

/** The closure of diff-against: a store path as it is, or a flake configuration (built if needed). */
export async function baselineClosure(
  nix: RunnerNix,
  against: Baseline,
  gcRoot: string
): Promise<{ entries: ClosureEntry[]; label: string; toplevel: string }> {
  if ('storePath' in against)
    return {
      entries: await nix.closure(against.storePath),
      label: against.storePath,
      toplevel: against.storePath
    }
  const evaluation = await nix.evaluate(against.flake)
  core.startGroup(`Build the diff baseline ${evaluation.outPath}`)
  await nix.build(evaluation.drvPath, evaluation.outPath, gcRoot).finally(() => core.endGroup())
  return {
    entries: await nix.closure(evaluation.outPath),
    label: `${against.flake.installable} (${evaluation.outPath})`,
    toplevel: evaluation.outPath
  }
}

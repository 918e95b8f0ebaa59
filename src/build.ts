import * as core from '@actions/core'
import * as os from 'os'
import * as path from 'path'
import { PendingSave, restoreForRun, storeCacheKeys } from './cache/store-cache'
import { BuiltSystem } from './deploy/deploy'
import { LoadedKey, loadKeys } from './deploy/keys'
import { ActionError, Phase } from './errors'
import { ensureBinfmt } from './nix/binfmt-setup'
import { StoreInfo, untrustedEmulationError } from './nix/daemon'
import { bootTrialProtocol, readBootFiles, readBootIdentity } from './nix/boot'
import { totalNarSize } from './nix/closure'
import { MachineEvaluation, selectMachines } from './nix/legacy'
import type { Baseline } from './nix/source'
import { RunnerNix } from './nix/nix'
import { Plan, planMachine, RunPlan } from './plan'
import { ClosureEntry } from './report/diff'
import { formatBytes } from './log/format'
import { DeployReport } from './report/report'
import { info, logWarning } from './log/untrusted'

/** The post step's state key for the store cache to save. */
export const STATE_CACHE = 'storeCache'

type Phased = <T>(p: Phase, fn: () => Promise<T>) => Promise<T>

/** One machine of the run: a flake's or configuration.nix's system, or a network's machine. */
export interface Machine {
  evaluation: MachineEvaluation
  report: DeployReport
  plan: Plan
  /** deployment.keys with their content, read (and masked) before anything untrusted is printed. */
  keys: LoadedKey[]
  built?: BuiltSystem
}

/** Evaluates what the source describes: one system, or the selected machines of a network. */
async function evaluateSource(run: RunPlan, nix: RunnerNix, tempDir: string): Promise<MachineEvaluation[]> {
  const src = run.source
  if (src.kind === 'flake') {
    const e = await nix.evaluate(src.flake)
    return [{ ...e, name: '', keys: [], ignored: [] }]
  }
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

/** Records the plan in a report; its warnings as annotations, prefixed with the machine's name. */
function notePlan(report: DeployReport, plan: Plan, prefix = ''): void {
  report.requestedMode = plan.requestedMode
  report.mode = plan.mode
  report.host = plan.mode === 'build' ? undefined : plan.target.label.replace(/^target /, '')
  for (const w of plan.warnings) logWarning(report.warnings, `${prefix}${w}`)
}

/**
 * The runner's half: evaluates the source, plans each machine (its warnings first), reads every
 * machine's keys (masked before anything untrusted is printed), restores the store cache, sets up
 * binfmt, builds every system in one Nix invocation and lists their closures. Nothing here connects.
 */
export async function buildMachines(
  run: RunPlan,
  nix: RunnerNix,
  report: DeployReport,
  tempDir: string,
  phase: Phased
): Promise<{ machines: Machine[]; nix: RunnerNix }> {
  report.flake = run.source.label
  report.mode = run.requestedMode
  // Its warnings (e.g. a fork PR's dry-activate becoming a build) come before the build's output.
  if (run.single) notePlan(report, run.single)
  const machines = await phase('build', () => evaluateMachines(run, nix, report, tempDir))
  // Every secret is registered before the build prints anything untrusted (see printUntrusted):
  // the keys are read now, for the machines whose mode uploads them.
  for (const m of machines)
    if (m.plan.mode !== 'build' && m.plan.goal.uploadsKeys)
      m.keys = await phase('inputs', () => loadKeys(m.evaluation.name || 'configuration', m.evaluation.keys))
  nix = await phase('build', () => buildAll(run, nix, machines, report, tempDir))
  return { machines, nix }
}

/** Evaluates the source and plans each machine (with its own report when there are several). */
async function evaluateMachines(
  run: RunPlan,
  nix: RunnerNix,
  report: DeployReport,
  tempDir: string
): Promise<Machine[]> {
  core.startGroup(`Evaluate ${run.source.label}`)
  const evaluations = await evaluateSource(run, nix, tempDir).finally(() => core.endGroup())
  const multi = evaluations.length > 1
  return evaluations.map(e => {
    info(`${e.name ? `${e.name}: ` : ''}${e.outPath} (${e.hostSystem})`)
    const hostReport: DeployReport = multi ? { timings: [], warnings: [], flake: report.flake } : report
    for (const option of e.ignored) {
      const w = `${e.name}: ${option} is ignored: nix-deploy-action deploys over SSH to deployment.targetHost, and keeps no NixOps state`
      logWarning(hostReport.warnings, w)
    }
    const plan = planMachine(run, e)
    if (!run.single) notePlan(hostReport, plan, multi ? `${e.name}: ` : '')
    if (e.name) hostReport.machine = e.name
    if (e.tags) hostReport.tags = e.tags
    hostReport.storePath = e.outPath
    hostReport.platform = e.hostSystem
    return { evaluation: e, report: hostReport, plan, keys: [] as LoadedKey[] }
  })
}

/** Restores the store cache, sets up binfmt, builds every system, lists closures; the Nix it used. */
async function buildAll(
  run: RunPlan,
  nix: RunnerNix,
  machines: Machine[],
  report: DeployReport,
  tempDir: string
): Promise<RunnerNix> {
  const multi = machines.length > 1
  const first = machines[0].evaluation
  if (run.cache)
    report.cache = await restoreForRun(nix, storeCacheKeys(run.cache, first.hostSystem), run.cache, w =>
      logWarning(report.warnings, w)
    )
  const store = await daemonTrust(nix, report)
  for (const buildSystem of [...new Set(machines.map(m => m.evaluation.buildSystem))]) {
    const binfmt = await ensureBinfmt(buildSystem, run.nix.binfmt)
    report.binfmt =
      binfmt.how === 'native' ? 'native' : binfmt.how === 'not-available' ? 'no emulation' : 'QEMU binfmt'
    info(binfmt.detail)
    if (store?.trusted === false && binfmt.nixSettings.some(([k]) => k === 'extra-platforms')) {
      const err = untrustedEmulationError(buildSystem, store, await nix.configuredPlatforms(), runnerUser())
      if (err) throw err
    }
    for (const [k, v] of binfmt.nixSettings) nix = nix.withSetting(k, v)
  }
  const what = multi
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
  report.builtDerivations = build.built.length
  // The post step saves the store cache, also when a deploy fails after this point.
  if (run.cache && report.cache?.available && (build.built.length > 0 || !report.cache.hit)) {
    const paths = [...machines.map(m => m.evaluation.outPath), ...(await nix.outputsOf(build.built))]
    const key = storeCacheKeys(run.cache, first.hostSystem).key
    const save: PendingSave = { key, paths, settings: run.cache.nixOptions, signed: !!run.cache.signingKey }
    core.saveState(STATE_CACHE, JSON.stringify(save))
  }
  for (const m of machines) await listClosure(nix, m, report, build.built.length)
  return nix
}

/**
 * What the store says of this user, for a run that is not root (root is trusted by any daemon, and
 * a store root opens directly has no trust to check). A daemon that does not trust the user
 * ignores most client settings: the action's extra-platforms (checked before an emulated build,
 * see untrustedEmulationError) and the nix-options it names, warned about here.
 */
async function daemonTrust(nix: RunnerNix, report: DeployReport): Promise<StoreInfo | undefined> {
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
    logWarning(report.warnings, w)
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

async function listClosure(
  nix: RunnerNix,
  m: Machine,
  report: DeployReport,
  builtDerivations: number
): Promise<void> {
  const closure = await nix.closure(m.evaluation.outPath)
  m.report.closureSize = totalNarSize(closure)
  m.report.closurePaths = closure.length
  m.report.builtDerivations = builtDerivations
  m.report.cache = report.cache
  m.report.binfmt = report.binfmt
  info(
    `Built ${m.evaluation.name ? `${m.evaluation.name}: ` : ''}${m.evaluation.outPath}: closure ${formatBytes(m.report.closureSize)} in ${closure.length} paths`
  )
  const boot = await readBootIdentity(m.evaluation.outPath)
  m.built = {
    toplevel: m.evaluation.outPath,
    hostSystem: m.evaluation.hostSystem,
    closure,
    boot,
    bootFiles: await readBootFiles(boot),
    bootTrialProtocol: await bootTrialProtocol(m.evaluation.outPath)
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

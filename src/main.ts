import * as core from '@actions/core'
import { randomBytes } from 'crypto'
import { promises as fs } from 'fs'
import * as os from 'os'
import * as path from 'path'
import { cacheDir, PendingSave, restoreForRun, storeCacheKeys } from './cache/store-cache'
import { formatBytes } from './report/format'
import { deployToTarget } from './deploy/deploy'
import { ActionError, Phase } from './errors'
import { InputName, Inputs, readInputs, SECRET_INPUTS } from './inputs'
import { ensureBinfmt } from './nix/binfmt-setup'
import { totalNarSize } from './nix/closure'
import { RunnerNix } from './nix/nix'
import { makePlan, Plan } from './plan'
import { DeployReport, outputsOf } from './report/report'
import { ClosureEntry, diffClosures } from './report/diff'
import { renderSummary } from './report/summary'
import { withCommandsOffAsync } from './report/untrusted'

export const STATE_IS_POST = 'isPost'
export const STATE_TEMP_DIR = 'tempDir'
export const STATE_CACHE = 'storeCache'

/**
 * Masks secrets before anything else can print them. A multi-line secret is masked line by line:
 * the runner matches masks per line of output, so one mask for the whole key would not hide a line
 * of it printed alone.
 */
export function maskSecrets(get: (name: InputName) => string): void {
  for (const name of SECRET_INPUTS) {
    const value = get(name)
    if (!value) continue
    core.setSecret(value)
    for (const line of value.split(/\r?\n/)) if (line.trim().length >= 4) core.setSecret(line.trim())
  }
}

async function timed<T>(report: DeployReport, phase: Phase, fn: () => Promise<T>): Promise<T> {
  const start = Date.now()
  try {
    return await fn()
  } finally {
    const ms = Date.now() - start
    const same = report.timings.find(t => t.phase === phase)
    if (same) same.ms += ms
    else report.timings.push({ phase, ms })
  }
}

/** A private directory under RUNNER_TEMP, recorded in state before use so the post step removes it. */
async function makeTempDir(): Promise<string> {
  const base = process.env.RUNNER_TEMP || os.tmpdir()
  const dir = path.join(base, `nix-deploy-action-${randomBytes(6).toString('hex')}`)
  core.saveState(STATE_TEMP_DIR, dir)
  await fs.mkdir(dir, { recursive: true, mode: 0o700 })
  return dir
}

async function deploy(inputs: Inputs, plan: Plan, report: DeployReport): Promise<void> {
  const tempDir = await makeTempDir()
  let nix = new RunnerNix(inputs.nixOptions)
  const phase = <T>(p: Phase, fn: () => Promise<T>): Promise<T> => timed(report, p, fn)

  // --- build
  const built = await phase('build', async () => {
    core.startGroup(`Evaluate ${inputs.flake.installable}`)
    const evaluation = await nix.evaluate(inputs.flake).finally(() => core.endGroup())
    core.info(`${evaluation.outPath} (${evaluation.hostSystem})`)
    report.storePath = evaluation.outPath
    report.platform = evaluation.hostSystem
    if (inputs.cache) report.cache = await restoreForRun(nix, storeCacheKeys(inputs, evaluation.hostSystem))
    const binfmt = await ensureBinfmt(evaluation.buildSystem, inputs.binfmt)
    report.binfmt =
      binfmt.how === 'native' ? 'native' : binfmt.how === 'not-available' ? 'no emulation' : 'QEMU binfmt'
    core.info(binfmt.detail)
    for (const [k, v] of binfmt.nixSettings) nix = nix.withSetting(k, v)
    core.startGroup(`Build ${evaluation.outPath}`)
    // Build logs are the derivations' own output (a pull request's code): shown, never obeyed.
    const build = await withCommandsOffAsync(() =>
      nix.build(evaluation.drvPath, evaluation.outPath, path.join(tempDir, 'system'))
    ).finally(() => core.endGroup())
    report.builtDerivations = build.built.length
    // The post step saves the store cache, also when the deploy fails after this point.
    if (report.cache?.available && (build.built.length > 0 || !report.cache.hit)) {
      const paths = [evaluation.outPath, ...(await nix.outputsOf(build.built))]
      const key = storeCacheKeys(inputs, evaluation.hostSystem).key
      const save: PendingSave = { dir: cacheDir(), key, paths, settings: inputs.nixOptions }
      core.saveState(STATE_CACHE, JSON.stringify(save))
    }
    const closure = await nix.closure(evaluation.outPath)
    report.closureSize = totalNarSize(closure)
    report.closurePaths = closure.length
    core.info(
      `Built ${evaluation.outPath}: closure ${formatBytes(report.closureSize)} in ${closure.length} paths`
    )
    return { toplevel: evaluation.outPath, hostSystem: evaluation.hostSystem, closure }
  })
  if (plan.mode === 'build' || !plan.target) {
    if (inputs.diffAgainst)
      await phase('build', async () => {
        const baseline = await baselineClosure(nix, inputs.diffAgainst!, path.join(tempDir, 'baseline'))
        report.diff = diffClosures(baseline.entries, built.closure)
        report.diffBaseline = baseline.label
      }).catch((e: unknown) => {
        const w = `no package diff: ${(e as Error).message}`
        report.warnings.push(w)
        core.warning(w)
      })
    report.result = 'built'
    return
  }
  await deployToTarget(inputs, plan, nix, built, report, phase)
}

/** The closure of diff-against: a store path as it is, or a flake configuration (built if needed). */
async function baselineClosure(
  nix: RunnerNix,
  against: NonNullable<Inputs['diffAgainst']>,
  gcRoot: string
): Promise<{ entries: ClosureEntry[]; label: string }> {
  if ('storePath' in against)
    return { entries: await nix.closure(against.storePath), label: against.storePath }
  const evaluation = await nix.evaluate(against.flake)
  core.startGroup(`Build the diff baseline ${evaluation.outPath}`)
  await withCommandsOffAsync(() => nix.build(evaluation.drvPath, evaluation.outPath, gcRoot)).finally(() =>
    core.endGroup()
  )
  return {
    entries: await nix.closure(evaluation.outPath),
    label: `${against.flake.installable} (${evaluation.outPath})`
  }
}

/** Reports a failure as an annotation, in the summary, and as the step's failure. */
function reportFailure(report: DeployReport, e: unknown): void {
  const err =
    e instanceof ActionError
      ? e
      : new ActionError(
          `unexpected error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`,
          'This is a bug in nix-deploy-action; please report it with the log.',
          'report'
        )
  report.result ??= 'failed'
  if (report.result !== 'rolled-back') report.result = 'failed'
  report.error = { message: err.message, hint: err.hint, phase: err.phase, details: err.details }
  if (err.details) core.info(err.details)
  core.error(`${err.message}\n${err.hint}`, { title: `nix-deploy-action: ${err.phase} failed` })
  core.setFailed(err.message)
}

export async function run(): Promise<void> {
  core.saveState(STATE_IS_POST, 'true')
  const report: DeployReport = { timings: [], warnings: [] }
  const get = (name: InputName): string => core.getInput(name)
  try {
    maskSecrets(get)
    const inputs = await timed(report, 'inputs', async () => readInputs(get))
    const plan = makePlan(inputs)
    report.requestedMode = plan.requestedMode
    report.mode = plan.mode
    report.flake = inputs.flake.installable
    report.host = plan.target?.label.replace(/^target /, '')
    for (const w of plan.warnings) {
      report.warnings.push(w)
      core.warning(w)
    }
    await withDeadline(inputs.timeoutSeconds, () => deploy(inputs, plan, report))
  } catch (e) {
    reportFailure(report, e)
  } finally {
    await finishReport(report)
  }
}

async function finishReport(report: DeployReport): Promise<void> {
  for (const [k, v] of Object.entries(outputsOf(report))) core.setOutput(k, v)
  try {
    await core.summary.addRaw(renderSummary(report)).write()
  } catch (e) {
    // No GITHUB_STEP_SUMMARY (e.g. a local run): the log has everything.
    core.debug(`no job summary: ${(e as Error).message}`)
  }
}

/**
 * The `timeout` input: the whole run's deadline. Past it the run fails at once, whatever it was
 * doing. That is safe on the target: the activation agent runs there by itself and rolls back when
 * no confirmation comes (magic rollback), and a cut copy leaves no partial path.
 */
function withDeadline(seconds: number | undefined, fn: () => Promise<void>): Promise<void> {
  if (seconds === undefined) return fn()
  let timer: NodeJS.Timeout | undefined
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new ActionError(
            `the deploy did not finish within timeout (${seconds} s)`,
            'The target rolls back by itself if the new system was not confirmed. Raise timeout, or look at the log for the step that hung.',
            'report'
          )
        ),
      seconds * 1000
    )
  })
  return Promise.race([fn(), expired]).finally(() => clearTimeout(timer))
}

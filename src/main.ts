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
import { DeployReport, outputsOf, worstReport } from './report/report'
import { MachineEvaluation, selectMachines } from './nix/legacy'
import { BuiltSystem } from './deploy/deploy'
import { HostAddress, isValidUser, parseHostAddress } from './ssh/address'
import { SharedJump } from './ssh/connection'
import { ClosureEntry, diffClosures } from './report/diff'
import { renderSummary } from './report/summary'
import { machineLog, printUntrusted } from './report/untrusted'
import { forgetSecretInputs, maskSecret } from './secrets'
import { LoadedKey, loadKeys } from './deploy/keys'

export const STATE_IS_POST = 'isPost'
export const STATE_TEMP_DIR = 'tempDir'
export const STATE_CACHE = 'storeCache'

/** Masks the secret inputs before anything else can print them (line by line: see maskSecret). */
export function maskSecrets(get: (name: InputName) => string): void {
  for (const name of SECRET_INPUTS) {
    const value = get(name)
    if (!value) continue
    maskSecret(value)
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

/** One machine of the run: a flake's or configuration.nix's system, or a network's machine. */
interface Machine {
  evaluation: MachineEvaluation
  /** The inputs as they apply to this machine (its target from the network file). */
  inputs: Inputs
  report: DeployReport
  plan: Plan
  /** deployment.keys with their content, read (and masked) before anything untrusted is printed. */
  keys: LoadedKey[]
  built?: BuiltSystem
}

/** Evaluates what the source describes: one system, or the selected machines of a network. */
async function evaluateSource(inputs: Inputs, nix: RunnerNix, tempDir: string): Promise<MachineEvaluation[]> {
  const src = inputs.source
  if (src.kind === 'flake') {
    const e = await nix.evaluate(src.flake)
    return [{ ...e, name: '', keys: [], ignored: [] }]
  }
  const expr = path.join(tempDir, 'evaluate.nix')
  if (src.kind === 'configuration') return nix.evaluateLegacy(src, [], expr)
  const selected = selectMachines(await nix.networkMachineNames(src, expr), src.machines)
  const overrides = [
    inputs.target && 'target-host',
    inputs.targetOverride.port !== undefined && 'target-port',
    inputs.targetOverride.user !== undefined && 'target-user'
  ].filter(Boolean)
  if (overrides.length > 0 && selected.length > 1)
    throw new ActionError(
      `${overrides.join(', ')} ${overrides.length > 1 ? 'are' : 'is'} set, but the network has ${selected.length} machines selected (${selected.join(', ')})`,
      'The file gives each machine its host, port and user; set these inputs only when machines selects one machine (they then override the file), or leave them empty.',
      'inputs'
    )
  return nix.evaluateLegacy(src, selected, expr)
}

/**
 * The inputs as they apply to one machine of a network: its host, port and user come from the file
 * (deployment.targetHost/Port/User); the action's target-* inputs override them when one machine
 * is deployed.
 */
export function inputsForMachine(inputs: Inputs, m: MachineEvaluation): Inputs {
  if (inputs.source.kind !== 'network') return inputs
  let fromFile: HostAddress
  try {
    fromFile = parseHostAddress(m.targetHost ?? m.name, `${m.name}: deployment.targetHost`)
  } catch (e) {
    throw new ActionError((e as Error).message, 'Fix deployment.targetHost in the network file.', 'inputs')
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
  const o = inputs.target
  const target: HostAddress = {
    host: o?.host ?? fromFile.host,
    port: o?.port ?? inputs.targetOverride.port ?? fromFile.port,
    user: o?.user ?? inputs.targetOverride.user ?? fromFile.user
  }
  return { ...inputs, target }
}

/** Records the plan in a report; its warnings as annotations, prefixed with the machine's name. */
function notePlan(report: DeployReport, plan: Plan, prefix = ''): void {
  report.requestedMode = plan.requestedMode
  report.mode = plan.mode
  report.host = plan.target?.label.replace(/^target /, '')
  for (const w of plan.warnings) {
    report.warnings.push(`${prefix}${w}`)
    core.warning(`${prefix}${w}`)
  }
}

async function deploy(inputs: Inputs, report: DeployReport, runDeadline?: number): Promise<void> {
  const tempDir = await makeTempDir()
  let nix = new RunnerNix(inputs.nixOptions)
  const phase = <T>(p: Phase, fn: () => Promise<T>): Promise<T> => timed(report, p, fn)
  report.flake = inputs.source.label
  report.mode = inputs.mode
  // A flake or configuration.nix: the plan does not depend on the evaluation; decide it first, so
  // its warnings (e.g. a fork PR's dry-activate becoming a build) come before the build's output.
  const singlePlan = inputs.source.kind === 'network' ? undefined : makePlan(inputs)
  if (singlePlan) notePlan(report, singlePlan)

  // --- build: evaluate, restore the store cache, set up binfmt, build every system in one go.
  const machines = await phase('build', async (): Promise<Machine[]> => {
    core.startGroup(`Evaluate ${inputs.source.label}`)
    const evaluations = await evaluateSource(inputs, nix, tempDir).finally(() => core.endGroup())
    const multi = evaluations.length > 1
    return evaluations.map(e => {
      core.info(`${e.name ? `${e.name}: ` : ''}${e.outPath} (${e.hostSystem})`)
      const hostReport: DeployReport = multi ? { timings: [], warnings: [], flake: report.flake } : report
      for (const option of e.ignored) {
        const w = `${e.name}: ${option} is ignored: nix-deploy-action deploys over SSH to deployment.targetHost, and keeps no NixOps state`
        hostReport.warnings.push(w)
        core.warning(w)
      }
      const machineInputs = inputsForMachine(inputs, e)
      const plan = singlePlan ?? makePlan(machineInputs)
      if (!singlePlan) notePlan(hostReport, plan, multi ? `${e.name}: ` : '')
      if (e.name) hostReport.machine = e.name
      hostReport.storePath = e.outPath
      hostReport.platform = e.hostSystem
      return { evaluation: e, inputs: machineInputs, report: hostReport, plan, keys: [] as LoadedKey[] }
    })
  })
  // Every secret is registered before the build prints anything untrusted (see printUntrusted):
  // the keys are read now, for the machines whose mode uploads them.
  for (const m of machines)
    if (['switch', 'boot', 'test'].includes(m.plan.mode) && m.plan.target)
      m.keys = await phase('inputs', () => loadKeys(m.evaluation.name || 'configuration', m.evaluation.keys))
  const multi = machines.length > 1
  await phase('build', async () => {
    const first = machines[0].evaluation
    if (inputs.cache) report.cache = await restoreForRun(nix, storeCacheKeys(inputs, first.hostSystem))
    for (const buildSystem of [...new Set(machines.map(m => m.evaluation.buildSystem))]) {
      const binfmt = await ensureBinfmt(buildSystem, inputs.binfmt)
      report.binfmt =
        binfmt.how === 'native' ? 'native' : binfmt.how === 'not-available' ? 'no emulation' : 'QEMU binfmt'
      core.info(binfmt.detail)
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
    if (report.cache?.available && (build.built.length > 0 || !report.cache.hit)) {
      const paths = [...machines.map(m => m.evaluation.outPath), ...(await nix.outputsOf(build.built))]
      const key = storeCacheKeys(inputs, first.hostSystem).key
      const save: PendingSave = { dir: cacheDir(), key, paths, settings: inputs.nixOptions }
      core.saveState(STATE_CACHE, JSON.stringify(save))
    }
    for (const m of machines) {
      const closure = await nix.closure(m.evaluation.outPath)
      m.report.closureSize = totalNarSize(closure)
      m.report.closurePaths = closure.length
      m.report.builtDerivations = build.built.length
      m.report.cache = report.cache
      m.report.binfmt = report.binfmt
      core.info(
        `Built ${m.evaluation.name ? `${m.evaluation.name}: ` : ''}${m.evaluation.outPath}: closure ${formatBytes(m.report.closureSize)} in ${closure.length} paths`
      )
      m.built = { toplevel: m.evaluation.outPath, hostSystem: m.evaluation.hostSystem, closure }
    }
  })

  if (!multi) {
    const [m] = machines
    if (m.plan.mode === 'build' || !m.plan.target) {
      if (inputs.diffAgainst)
        await phase('build', async () => {
          const baseline = await baselineClosure(nix, inputs.diffAgainst!, path.join(tempDir, 'baseline'))
          report.diff = diffClosures(baseline.entries, m.built!.closure)
          report.diffBaseline = baseline.label
        }).catch((e: unknown) => {
          const w = `no package diff: ${(e as Error).message}`
          report.warnings.push(w)
          core.warning(w)
        })
      report.result = 'built'
      return
    }
    await deployToTarget(m.inputs, m.plan, nix, m.built!, report, phase, {
      name: m.evaluation.name,
      keys: m.keys,
      runDeadline
    })
    return
  }
  await deployMachines(inputs, nix, machines, report, runDeadline)
}

/**
 * Several machines: each deploys over its own SSH session (through one shared jump host
 * connection), at most `parallel` at a time. One failing does not stop the others unless
 * fail-fast is on; then machines not yet started are skipped (running ones finish safely).
 */
async function deployMachines(
  inputs: Inputs,
  nix: RunnerNix,
  machines: Machine[],
  report: DeployReport,
  runDeadline: number | undefined
): Promise<void> {
  const buildTiming = report.timings.find(t => t.phase === 'build')
  report.hosts = machines.map(m => ({ machine: m.evaluation.name, report: m.report }))
  const jumpPlan = machines.find(m => m.plan.jump)?.plan.jump
  const jump =
    jumpPlan &&
    new SharedJump(jumpPlan, {
      knownHosts: inputs.knownHosts,
      insecureSkipHostKeyCheck: inputs.insecureSkipHostKeyCheck,
      timeoutMs: inputs.connectTimeoutSeconds * 1000
    })
  let failed = false
  const queue = [...machines]
  const worker = async (): Promise<void> => {
    for (let m = queue.shift(); m; m = queue.shift()) {
      const r = m.report
      const name = m.evaluation.name
      if (buildTiming) r.timings.push({ ...buildTiming })
      if (failed && inputs.failFast) {
        r.result = 'skipped'
        r.warnings.push('not deployed: another machine failed and fail-fast is on')
        continue
      }
      if (m.plan.mode === 'build' || !m.plan.target) {
        r.result = 'built'
        continue
      }
      // Several machines print at once: each line carries its machine's name (no log groups).
      const log = machineLog(name, true)
      log.info(`deploying to ${m.plan.target.label}`)
      try {
        await deployToTarget(m.inputs, m.plan, nix, m.built!, r, (p, fn) => timed(r, p, fn), {
          name,
          keys: m.keys,
          jump,
          runDeadline,
          log
        })
        log.info(`${r.result}`)
      } catch (e) {
        failed = true
        reportFailure(r, e, name)
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(inputs.parallel, machines.length) }, worker))
  const worst = worstReport(machines.map(m => m.report))
  report.result = worst.result
  if (machines.some(m => m.report.result === 'failed' || m.report.result === 'rolled-back'))
    core.setFailed(
      `${machines.filter(m => m.report.result === 'failed' || m.report.result === 'rolled-back').length} of ${machines.length} machines failed`
    )
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
  await nix.build(evaluation.drvPath, evaluation.outPath, gcRoot).finally(() => core.endGroup())
  return {
    entries: await nix.closure(evaluation.outPath),
    label: `${against.flake.installable} (${evaluation.outPath})`
  }
}

/** Reports a failure as an annotation, in the summary, and as the step's failure. */
function reportFailure(report: DeployReport, e: unknown, machine = ''): void {
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
  // Details hold build and activation output (untrusted): shown, never obeyed.
  if (err.details) printUntrusted(err.details, machine ? `[${machine}] ` : '')
  const who = machine ? `${machine}: ` : ''
  core.error(`${who}${err.message}\n${err.hint}`, { title: `nix-deploy-action: ${who}${err.phase} failed` })
  if (!machine) core.setFailed(err.message)
}

export async function run(): Promise<void> {
  core.saveState(STATE_IS_POST, 'true')
  const report: DeployReport = { timings: [], warnings: [] }
  const get = (name: InputName): string => core.getInput(name)
  try {
    maskSecrets(get)
    const inputs = await timed(report, 'inputs', async () => readInputs(get))
    // Read into memory now: no child process started from here on can inherit them.
    forgetSecretInputs(SECRET_INPUTS)
    await withDeadline(inputs.timeoutSeconds, runDeadline => deploy(inputs, report, runDeadline))
  } catch (e) {
    reportFailure(report, e)
  } finally {
    await finishReport(report)
  }
}

async function finishReport(report: DeployReport): Promise<void> {
  // Millisecond phase times for `npm run bench` (the summary rounds to 0.1 s); RUNNER_DEBUG only.
  core.debug(`phase timings (ms): ${JSON.stringify(report.timings)}`)
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
 * no confirmation comes (magic rollback), and a cut copy leaves no partial path. `fn` gets the
 * deadline (epoch ms): a confirmation must not be sent close to it.
 */
function withDeadline(
  seconds: number | undefined,
  fn: (runDeadline: number | undefined) => Promise<void>
): Promise<void> {
  if (seconds === undefined) return fn(undefined)
  const runDeadline = Date.now() + seconds * 1000
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
  return Promise.race([fn(runDeadline), expired]).finally(() => clearTimeout(timer))
}

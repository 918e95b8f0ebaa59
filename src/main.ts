import * as core from '@actions/core'
import { randomBytes } from 'crypto'
import { promises as fs } from 'fs'
import * as os from 'os'
import * as path from 'path'
import { BuildResult, buildMachines, Machine, startBuild } from './build'
import { planStamp, PlanStamp } from './target/plan-record'
import { ActionError, Phase } from './errors'
import { EarlyDial, FleetMachine, MachineReach, runFleet } from './fleet'
import { FleetLook, LookedAtMachine, lookAtFleet } from './fleet-report'
import type { DeployPlanDoc } from './nix/deploy-plan'
import { InputName, readInputs, SECRET_INPUTS } from './inputs'
import { RunnerNix } from './nix/nix'
import { DeployPlan, deployJob, planRun, ReportPlan, RunPlan } from './plan'
import { reportFailure } from './report/failure'
import { publishReport } from './report/publish'
import { reportBuild, reportFleet } from './report/assemble'
import { DeployReport } from './report/report'
import { forgetSecretInputs, maskSecret } from './secrets'
import { endAllProxies } from './ssh/proxy'

export { STATE_CACHE } from './build'
export const STATE_IS_POST = 'isPost'
export const STATE_TEMP_DIR = 'tempDir'

/** Masks the secret inputs before anything else can print them (line by line: see maskSecret). */
export function maskSecrets(get: (name: InputName) => string): void {
  for (const name of SECRET_INPUTS) {
    const value = get(name)
    if (!value) continue
    maskSecret(value)
    // A signing key's base64 alone is the secret too (NAME: is its public label).
    if (name === 'signing-key') maskSecret(value.slice(value.indexOf(':') + 1))
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

/**
 * How far the run got: its build, and whether the report has taken it in yet. The `timeout`
 * input's deadline can end the run while the build still runs; what it found is reported then.
 */
interface RunProgress {
  build?: BuildResult
  machineReports?: DeployReport[]
}

/** The build's facts into the report, once: after the build, or when the run ends before that. */
function reportBuildOnce(report: DeployReport, progress: RunProgress): DeployReport[] {
  if (!progress.build) return []
  progress.machineReports ??= reportBuild(report, progress.build.facts)
  return progress.machineReports
}

/** plan → build → fleet (connect → copy → activate → verify); the report is written after it. */
async function deploy(
  run: RunPlan,
  report: DeployReport,
  progress: RunProgress,
  runDeadline?: number
): Promise<void> {
  const early = run.single && dialEarly(run, run.single)
  try {
    await deployWith(run, report, progress, runDeadline, early)
  } finally {
    early?.dispose()
  }
}

async function deployWith(
  run: RunPlan,
  report: DeployReport,
  progress: RunProgress,
  runDeadline: number | undefined,
  early: EarlyDial | undefined
): Promise<void> {
  const tempDir = await makeTempDir()
  const phase = <T>(p: Phase, fn: () => Promise<T>): Promise<T> => timed(report, p, fn)
  const build = startBuild(run, new RunnerNix(run.nix.options, run.nix.secretConfig))
  progress.build = build
  let reports: DeployReport[]
  try {
    await buildMachines(run, build, tempDir, phase)
  } finally {
    reports = reportBuildOnce(report, progress)
  }
  const { machines } = build
  if (machines.length === 1 && machines[0].plan.mode === 'build') return
  const { source } = run
  if (run.requestedMode === 'report' && source.kind === 'plan') {
    const looked = machines.flatMap((m, n) => lookedAtMachine(m, reports[n], source.plan))
    await phase('verify', () => lookAtFleet(looked, lookOptions(run, source.plan, machines)))
    reportFleet(report, reports)
    return
  }
  // A shard of a deploy plan leaves its record on each machine it deploys (for the report job).
  const stamp = source.kind === 'plan' ? planStamp(source.plan, source.shard) : undefined
  if (stamp?.shard) for (const r of reports) r.shard = stamp.shard
  await runFleet(
    machines.map((m, n) => fleetMachine(m, reports[n], runDeadline, stamp)),
    build.nix,
    { ...run.fleet, connect: run.connect, timed: r => (p, fn) => timed(r, p, fn), early }
  )
  reportFleet(report, reports)
}

/**
 * A flake or configuration.nix deploy knows its target from the inputs: its connection is dialled
 * while Nix evaluates and builds (a no-op or a small change waits for neither in turn).
 */
function dialEarly(run: RunPlan, plan: NonNullable<RunPlan['single']>): EarlyDial | undefined {
  if (plan.mode === 'build') return undefined
  return new EarlyDial(plan.target, plan.jumps, { ...run.connect, sudo: plan.sudo })
}

/** mode report: a machine of the deploy plan, to read what it runs. */
function lookedAtMachine(m: Machine, report: DeployReport, doc: DeployPlanDoc): LookedAtMachine[] {
  const { plan } = m
  if (plan.mode !== 'report') return []
  const name = m.evaluation.name
  const shard = doc.shards.find(s => s.machines.includes(name))?.id ?? ''
  return [{ name, report, reach: machineReach(plan, name), planned: m.evaluation.outPath, shard }]
}

/** mode report over a plan; with rollback-fleet, this job's timeouts for putting machines back. */
function lookOptions(run: RunPlan, doc: DeployPlanDoc, machines: Machine[]): FleetLook {
  const plan = machines.find(m => m.plan.mode === 'report')?.plan as ReportPlan | undefined
  const rollback =
    run.fleet.rollbackFleet && plan
      ? {
          settings: { ...plan.job.activation, magicRollback: false, healthChecks: [] },
          lockTimeoutSeconds: plan.job.lockTimeoutSeconds
        }
      : undefined
  return {
    parallel: run.fleet.parallel,
    connect: run.connect,
    planId: doc.id,
    rollback,
    // (No plan of mode report: no machine to look at.)
    lockTimeoutSeconds: plan?.job.lockTimeoutSeconds ?? 0
  }
}

/** Where the fleet dials a machine; proxy-command's %n is its name in a network file, else its host. */
function machineReach(plan: DeployPlan | ReportPlan, name: string): MachineReach {
  const named = name && /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(name)
  return { target: named ? { ...plan.target, name } : plan.target, jumps: plan.jumps, sudo: plan.sudo }
}

/** A machine as the fleet deploys it: its job, or none when it is only built. */
function fleetMachine(
  m: Machine,
  report: DeployReport,
  runDeadline: number | undefined,
  planStamp: PlanStamp | undefined
): FleetMachine {
  const { plan } = m
  const name = m.evaluation.name
  if (plan.mode === 'build' || plan.mode === 'report' || !m.built) return { name, report }
  return {
    name,
    report,
    deploy: {
      ...machineReach(plan, name),
      job: deployJob(plan, { name, keys: m.keys, built: m.built, runDeadline, planStamp })
    }
  }
}

export async function run(): Promise<void> {
  core.saveState(STATE_IS_POST, 'true')
  const report: DeployReport = { timings: [], warnings: [] }
  const get = (name: InputName): string => core.getInput(name)
  const progress: RunProgress = {}
  try {
    maskSecrets(get)
    const inputs = await timed(report, 'inputs', async () => readInputs(get))
    // Read into memory now: no child process started from here on can inherit them.
    forgetSecretInputs(SECRET_INPUTS)
    const run = planRun(inputs)
    await withDeadline(run.timeoutSeconds, runDeadline => deploy(run, report, progress, runDeadline))
  } catch (e) {
    reportBuildOnce(report, progress)
    reportFailure(report, e)
  } finally {
    try {
      await publishReport(report)
    } finally {
      await endAllProxies()
    }
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

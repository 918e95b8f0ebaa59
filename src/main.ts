import * as core from '@actions/core'
import { randomBytes } from 'crypto'
import { promises as fs } from 'fs'
import * as os from 'os'
import * as path from 'path'
import { activate, readRemoteState, RolledBackError } from './deploy/activate'
import { copyClosure, formatBytes, gcRootPath } from './deploy/copy'
import { generationOf, RemoteState } from './deploy/remote-state'
import { ActionError, Phase } from './errors'
import { InputName, Inputs, readInputs, SECRET_INPUTS } from './inputs'
import { ensureBinfmt } from './nix/binfmt-setup'
import { totalNarSize } from './nix/closure'
import { RunnerNix } from './nix/nix'
import { makePlan, Plan } from './plan'
import { DeployReport, outputsOf } from './report/report'
import { renderSummary } from './report/summary'
import { RemoteHost } from './ssh/connection'
import { shellCommand } from './ssh/quote'

export const STATE_IS_POST = 'isPost'
export const STATE_TEMP_DIR = 'tempDir'

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
    report.timings.push({ phase, ms: Date.now() - start })
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

  // --- build
  const { evaluation, closure } = await timed(report, 'build', async () => {
    core.startGroup(`Evaluate ${inputs.flake.installable}`)
    const evaluation = await nix.evaluate(inputs.flake)
    core.info(`${evaluation.outPath} (${evaluation.hostSystem})`)
    core.endGroup()
    report.storePath = evaluation.outPath
    report.platform = evaluation.hostSystem
    const binfmt = await ensureBinfmt(evaluation.buildSystem, inputs.binfmt)
    report.binfmt =
      binfmt.how === 'native' ? 'native' : binfmt.how === 'not-available' ? 'no emulation' : 'QEMU binfmt'
    core.info(binfmt.detail)
    for (const [k, v] of binfmt.nixSettings) nix = nix.withSetting(k, v)
    core.startGroup(`Build ${evaluation.outPath}`)
    try {
      const built = await nix.build(evaluation.drvPath, evaluation.outPath, path.join(tempDir, 'system'))
      report.builtDerivations = built.built.length
    } finally {
      core.endGroup()
    }
    const closure = await nix.closure(evaluation.outPath)
    report.closureSize = totalNarSize(closure)
    report.closurePaths = closure.length
    core.info(
      `Built ${evaluation.outPath}: closure ${formatBytes(report.closureSize)} in ${closure.length} paths`
    )
    return { evaluation, closure }
  })
  if (plan.mode === 'build' || !plan.target) {
    report.result = 'built'
    return
  }
  const toplevel = evaluation.outPath

  // --- connect
  const host = await timed(report, 'connect', () =>
    RemoteHost.connect(plan.target!, plan.jump, {
      knownHosts: inputs.knownHosts,
      insecureSkipHostKeyCheck: inputs.insecureSkipHostKeyCheck,
      timeoutMs: inputs.connectTimeoutSeconds * 1000
    })
  )
  try {
    const before: RemoteState = await readRemoteState(host)
    report.previousStorePath = before.current
    core.info(
      `${host.target.label} runs ${before.current ?? '(no /run/current-system)'}; profile ${before.profile ?? '(none)'}`
    )
    if (!before.hasNixStore)
      throw new ActionError(
        `${host.target.label} has no nix-store in PATH`,
        'Deploy to a NixOS machine (or one with Nix installed), as a user whose PATH includes Nix.',
        'connect'
      )
    if (before.uid !== 0 && plan.mode !== 'dry-activate')
      throw new ActionError(
        `target-user ${plan.target.user} is not root (uid ${before.uid}): setting the system profile and activating need root`,
        "Use target-user: root with a key allowed in root's authorized_keys.",
        'connect'
      )

    const unchanged =
      (plan.mode === 'switch' && before.current === toplevel && before.profile === toplevel) ||
      (plan.mode === 'boot' && before.profile === toplevel) ||
      (plan.mode === 'test' && before.current === toplevel)
    if (unchanged) {
      report.result = 'unchanged'
      report.changed = false
      report.copiedBytes = 0
      report.copiedPaths = 0
      report.generation = plan.setsProfile ? generationOf(before.profileLink) : undefined
      core.info(`${host.target.label} already runs ${toplevel}: nothing to do`)
      return
    }

    // --- copy
    const copied = await timed(report, 'copy', () => copyClosure(host, nix, toplevel, closure))
    report.copiedBytes = copied.narBytes
    report.copiedPaths = copied.copiedPaths.length
    report.wireBytes = copied.wireBytes

    // --- activate
    try {
      const outcome = await timed(report, 'activate', () => activate(host, plan, toplevel, before))
      report.generation = outcome.generation
      report.activationLog = outcome.log
    } catch (e) {
      if (e instanceof RolledBackError) {
        report.result = 'rolled-back'
        report.rolledBackTo = e.rolledBackTo
      }
      throw e
    } finally {
      // The profile (switch, boot) or /run/current-system (test) holds the system now; a dry-run
      // or a rolled-back system may be collected by the Pi's GC again.
      await host
        .exec(shellCommand(['rm', '-f', gcRootPath(toplevel)]), { timeoutMs: 60_000 })
        .catch(() => undefined)
    }

    // --- verify
    await timed(report, 'verify', async () => {
      const after = await readRemoteState(host)
      const problems = [
        plan.changesRunningSystem && after.current !== toplevel && `it runs ${after.current ?? 'nothing'}`,
        plan.setsProfile &&
          after.profile !== toplevel &&
          `its system profile is ${after.profile ?? 'missing'}`
      ].filter(Boolean)
      if (problems.length > 0)
        throw new ActionError(
          `switch-to-configuration ${plan.mode} succeeded, but ${host.target.label} did not take ${toplevel}: ${problems.join(', ')}`,
          "Check the activation output; the configuration's activation may not manage /run/current-system as NixOS does.",
          'verify'
        )
      report.changed =
        plan.mode === 'boot'
          ? after.profile !== before.profile
          : plan.mode === 'dry-activate'
            ? before.current !== toplevel
            : after.current !== before.current
      report.result = plan.mode === 'dry-activate' ? 'dry-activated' : 'deployed'
    })
  } finally {
    host.close()
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
    await deploy(inputs, plan, report)
  } catch (e) {
    reportFailure(report, e)
  } finally {
    for (const [k, v] of Object.entries(outputsOf(report))) core.setOutput(k, v)
    try {
      await core.summary.addRaw(renderSummary(report)).write()
    } catch (e) {
      // No GITHUB_STEP_SUMMARY (e.g. a local run): the log has everything.
      core.debug(`no job summary: ${(e as Error).message}`)
    }
  }
}

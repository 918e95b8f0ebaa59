import * as core from '@actions/core'
import { copyClosure } from './deploy/copy'
import { DeployDeps, deployToTarget, DeployJob, Timed } from './deploy/deploy'
import { RunnerNix } from './nix/nix'
import { reportFailure } from './report/failure'
import { applyMachineResult, DeployReport } from './report/report'
import { Log, machineLog } from './report/untrusted'
import { ConnectOptions, RemoteHost, SharedJump } from './ssh/connection'
import { Endpoint } from './ssh/endpoint'
import { SshTarget } from './target/ssh-target'
import { Rollout, rollOut } from './rollout'

/** One machine of the run, ready to deploy (or only built: no job). */
export interface FleetMachine {
  name: string
  /** This machine's report (with one machine, the run's own). */
  report: DeployReport
  /** Undefined for a build-only plan (mode build, or dry-activate degraded to a build). */
  deploy?: {
    job: DeployJob
    target: Endpoint
    /** The jump hosts, first dialled first (empty: none). */
    jumps: Endpoint[]
    sudo: boolean
  }
}

export interface FleetOptions {
  parallel: number
  failFast: boolean
  rollout: Rollout
  connect: Omit<ConnectOptions, 'sudo'>
  timed: (report: DeployReport) => Timed
}

/**
 * Deploys every machine, at most `parallel` at a time: a single machine is a fleet of one. With
 * several, each deploys over its own SSH session through one shared jump host connection, every
 * line it prints carries its name, and one failing does not stop the others unless fail-fast is on
 * (then machines not yet started are skipped; running ones finish safely).
 */
export async function runFleet(machines: FleetMachine[], nix: RunnerNix, opts: FleetOptions): Promise<void> {
  const several = machines.length > 1
  const jumps = machines.find(m => m.deploy?.jumps.length)?.deploy?.jumps
  const shared = several && jumps ? new SharedJump(jumps, opts.connect) : undefined
  const deps: DeployDeps = {
    copy: (target, plan, count, compression) => copyClosure(target, nix, plan, count, compression)
  }
  await rollOut(machines, m => m.name, {
    rollout: opts.rollout,
    parallel: opts.parallel,
    failFast: opts.failFast,
    deploy: async m => {
      if (!(await deployOne(m, several, shared, deps, opts))) return 'failed'
      return m.report.result === 'unchanged' ? 'unchanged' : 'changed'
    },
    skip: (m, why) => {
      m.report.result = 'skipped'
      m.report.warnings.push(why)
      if (several) machineLog(m.name, several).info(why)
    }
  })
  const failures = machines.filter(m => m.report.result === 'failed' || m.report.result === 'rolled-back')
  if (several && failures.length > 0)
    core.setFailed(`${failures.length} of ${machines.length} machines failed`)
}

/** Connects to one machine and deploys it; false when it failed (reported already). */
async function deployOne(
  m: FleetMachine,
  several: boolean,
  shared: SharedJump | undefined,
  deps: DeployDeps,
  opts: FleetOptions
): Promise<boolean> {
  if (!m.deploy) {
    m.report.result = 'built'
    return true
  }
  const { job, target: endpoint, jumps, sudo } = m.deploy
  const log: Log = machineLog(m.name, several)
  const timed = opts.timed(m.report)
  if (several) log.info(`deploying to ${endpoint.label}`)
  try {
    const dial = (): Promise<RemoteHost> =>
      RemoteHost.connect(endpoint, shared ?? jumps, { ...opts.connect, sudo })
    const target = await timed('connect', () => SshTarget.connect(dial, log))
    const outcome = await deployToTarget(target, job, deps, timed)
    applyMachineResult(m.report, outcome.result)
    if (outcome.error !== undefined) throw outcome.error
    if (several) log.info(`${m.report.result}`)
    return true
  } catch (e) {
    reportFailure(m.report, e, several ? m.name : '')
    return false
  }
}

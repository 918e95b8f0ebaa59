import { copyClosure } from './deploy/copy'
import { fetchFromCache } from './cache/publish'
import { checkGatedDeploy } from './deploy/preflight'
import { SigningKey } from './cache/signing'
import { DeployDeps, DeployOutcome, deployToTarget, DeployJob, Timed } from './deploy/deploy'
import { pruneAfterFleet, revertDeploy, UndoRecord } from './deploy/revert'
import { RunnerNix } from './nix/nix'
import { reportFailure } from './report/failure'
import { applyMachineResult, DeployReport, failedResult } from './report/report'
import { Log, machineLog } from './log/untrusted'
import { ConnectOptions, RemoteHost, SharedJump } from './ssh/connection'
import { Endpoint } from './ssh/endpoint'
import { SshTarget } from './target/ssh-target'
import { inParallel, Rollout, rollOut } from './rollout'

/** Where a machine is and how its commands run there. */
export interface MachineReach {
  target: Endpoint
  /** The jump hosts, first dialled first (empty: none). */
  jumps: Endpoint[]
  sudo: boolean
}

/** One machine of the run, ready to deploy (or only built: no job). */
export interface FleetMachine {
  name: string
  /** This machine's report (with one machine, the run's own). */
  report: DeployReport
  /** Undefined for a build-only plan (mode build, or dry-activate degraded to a build). */
  deploy?: MachineReach & { job: DeployJob }
}

/**
 * One machine's connection dialled while Nix still evaluates and builds (a flake or
 * configuration.nix deploy: its target is known from the inputs): the deploy then starts on a
 * connection that is already up. A failed dial is reported when the deploy takes it, as any
 * connect failure.
 */
export class EarlyDial {
  private host: Promise<RemoteHost> | undefined

  constructor(target: Endpoint, jumps: Endpoint[], connect: ConnectOptions) {
    this.host = RemoteHost.connect(target, jumps, connect)
    // Handled where it is taken; until then a failure must not be an unhandled rejection.
    this.host.catch(() => undefined)
  }

  /** The early connection, once (later dials are the deploy's own). */
  take(): Promise<RemoteHost> | undefined {
    const host = this.host
    this.host = undefined
    return host
  }

  /** Closes the connection if the deploy did not take it (e.g. the build failed). */
  dispose(): void {
    void this.take()?.then(
      h => h.close(),
      () => undefined
    )
  }
}

export interface FleetOptions {
  parallel: number
  failFast: boolean
  rollout: Rollout
  /** When a machine fails, put the machines this run already deployed back on what they ran. */
  rollbackFleet: boolean
  connect: Omit<ConnectOptions, 'sudo'>
  timed: (report: DeployReport) => Timed
  /** The single machine's connection, dialled during the build (see EarlyDial). */
  early?: EarlyDial
  /** signing-key: what a deploy user's gate needs the copied paths signed with. */
  signingKey?: SigningKey
}

/**
 * Deploys every machine, at most `parallel` at a time: a single machine is a fleet of one. With
 * several, each deploys over its own SSH session through one shared jump host connection, every
 * line it prints carries its name, and one failing does not stop the others unless fail-fast is on
 * (then machines not yet started are skipped; running ones finish safely).
 */
export async function runFleet(machines: FleetMachine[], nix: RunnerNix, opts: FleetOptions): Promise<void> {
  await withSharedJump(
    machines.map(m => m.deploy),
    opts.connect,
    shared => deployFleet(machines, nix, opts, shared)
  )
}

/**
 * Runs `fn` with one jump connection for every machine when there are several; one machine dials
 * its own chain each time: a connection it drops (the link to the target cut mid-copy) ends with
 * its jump connection, instead of waiting on a jump host that cannot flush it.
 */
export async function withSharedJump(
  reaches: Array<MachineReach | undefined>,
  connect: FleetOptions['connect'],
  fn: (shared: SharedJump | undefined) => Promise<void>
): Promise<void> {
  const jumps = reaches.find(r => r?.jumps.length)?.jumps
  const shared = reaches.length > 1 && jumps ? new SharedJump(jumps, connect) : undefined
  const unhold = shared?.hold()
  try {
    await fn(shared)
  } finally {
    unhold?.()
  }
}

async function deployFleet(
  machines: FleetMachine[],
  nix: RunnerNix,
  opts: FleetOptions,
  shared: SharedJump | undefined
): Promise<void> {
  const several = machines.length > 1
  const fleetRollback = opts.rollbackFleet && several
  // The generation before this run's must outlive every machine's result: pruned after them.
  const keep = fleetRollback ? deferPrunes(machines) : new Map<FleetMachine, number>()
  const undo = await deployAll(machines, several, shared, deployDeps(nix, opts), opts)
  const visit: Visit = (m, fn) => visitMachine(m, m.deploy!, several, shared, opts.connect, fn)
  const failed = machines.filter(m => failedResult(m.report))
  if (fleetRollback && failed.length > 0) {
    for (const m of machines)
      if (m.report.result === 'deployed' && m.report.changed && !undo.has(m))
        m.report.warnings.push('not rolled back (rollback-fleet): it rebooted into the new system')
    const failedNames = failed.map(f => f.name)
    await inParallel([...undo.keys()], opts.parallel, m => revertMachine(m, undo.get(m)!, failedNames, visit))
  }
  await inParallel(
    [...keep.keys()].filter(m => m.report.result === 'deployed'),
    opts.parallel,
    m =>
      visit(m, async target => {
        m.report.deletedGenerations = await pruneAfterFleet(target, keep.get(m)!)
      })
  )
}

/** A later visit to one machine of the fleet, over a new connection (see visitMachine). */
export type Visit<M = FleetMachine> = (m: M, fn: (target: SshTarget) => Promise<void>) => Promise<void>

/** The runner's side of every machine's deploy: the copy, and what a deploy user's gate will refuse. */
function deployDeps(nix: RunnerNix, opts: FleetOptions): DeployDeps {
  return {
    copy: (target, plan, count, compression) =>
      copyClosure(target, nix, plan, count, compression, opts.signingKey),
    fetchFromCache: (cache, paths) => fetchFromCache(nix, cache, paths),
    // A deploy plan's target fetches the paths signed from its cache: signing-key only for what it cannot.
    checkGated: (label, job) =>
      checkGatedDeploy(
        label,
        job.built.toplevel,
        job.built.deployUser,
        job.activation.healthChecks,
        !!opts.signingKey || (job.built.cache !== undefined && job.substituteOnDestination)
      ),
    signingPublicKey: opts.signingKey?.publicKey
  }
}

/** Takes keep-generations off each machine's job, to prune after the fleet's results: how many each keeps. */
function deferPrunes(machines: FleetMachine[]): Map<FleetMachine, number> {
  const keep = new Map<FleetMachine, number>()
  for (const m of machines)
    if (m.deploy?.job.keepGenerations !== undefined) {
      keep.set(m, m.deploy.job.keepGenerations)
      m.deploy = { ...m.deploy, job: { ...m.deploy.job, keepGenerations: undefined } }
    }
  return keep
}

/** Rolls every machine out; what undoes each one that changed (for rollback-fleet). */
async function deployAll(
  machines: FleetMachine[],
  several: boolean,
  shared: SharedJump | undefined,
  deps: DeployDeps,
  opts: FleetOptions
): Promise<Map<FleetMachine, UndoRecord>> {
  const undo = new Map<FleetMachine, UndoRecord>()
  await rollOut(machines, m => m.name, {
    rollout: opts.rollout,
    parallel: opts.parallel,
    failFast: opts.failFast,
    deploy: async m => {
      const outcome = await deployOne(m, several, shared, deps, opts)
      if ('failed' in outcome) {
        // A step after its activation failed: it may run the new system, so it is put back too.
        if (outcome.undo) undo.set(m, outcome.undo)
        return 'failed'
      }
      if (outcome.undo && m.report.changed) undo.set(m, outcome.undo)
      return m.report.result === 'unchanged' ? 'unchanged' : 'changed'
    },
    skip: (m, why) => {
      m.report.result = 'skipped'
      machineLog(m.name, several, m.report.warnings).warning(why)
    }
  })
  return undo
}

/**
 * rollback-fleet on one machine this run deployed: back on what it ran before (result
 * rolled-back), unless another deploy changed it since (then left as it is, with a warning). A
 * machine whose own deploy failed after its activation (result failed) goes back the same way
 * and stays a failure: its error is kept, and said again should putting it back fail too.
 */
export async function revertMachine<M extends Pick<FleetMachine, 'name' | 'report'>>(
  m: M,
  undo: UndoRecord,
  failedNames: string[],
  visit: Visit<M>,
  /** Where it changed since it was read (another run put it back, or deployed it): read it again. */
  readAgain?: (target: SshTarget) => Promise<void>
): Promise<void> {
  const own = failedResult(m.report) ? m.report.error : undefined
  const others = failedNames.filter(n => n !== m.name)
  const why = own
    ? `its own deploy failed after activating the new system${others.length > 0 ? ` (${others.join(', ')} failed too)` : ''}`
    : `another machine of the fleet failed (${failedNames.join(', ')})`
  await visit(m, async target => {
    target.log.info(`rolling back (rollback-fleet): ${why}`)
    const back = undo.recordWhenBack && {
      ...undo.recordWhenBack,
      message: undo.recordWhenBack.message ?? why
    }
    const outcome = await revertDeploy(target, { ...undo, recordWhenBack: back })
    if (outcome.kind === 'moved-on') {
      // With readAgain (the report job): what it runs now is read again and said instead.
      if (readAgain) return readAgain(target)
      m.report.warnings.push(
        own
          ? `not rolled back (rollback-fleet): it does not run what this run deployed (${outcome.now}); left as it is`
          : `not rolled back (rollback-fleet): it changed after this run deployed it (${outcome.now}); left as it is`
      )
      return
    }
    if (own) {
      // Still a failure (its error stays): the report says rollback-fleet put it back, and why.
      Object.assign(m.report, { result: 'rolled-back', rolledBackTo: outcome.to, failureRolledBack: why })
      return
    }
    // The report annotates it (src/report/publish.ts): its result says what happened.
    Object.assign(m.report, {
      result: 'rolled-back',
      rolledBackTo: outcome.to,
      changed: false,
      fleetRollback: why
    })
  })
  // Putting it back failed (visitMachine reported that as its error): its deploy's error, said too.
  if (own && m.report.error !== own) m.report.warnings.push(`its deploy had failed before: ${own.message}`)
}

/**
 * A new visit to one machine after its deploy (a fleet rollback, a deferred prune): its own
 * connection through the shared jump; a failure is the machine's (reported, result failed).
 */
export async function visitMachine(
  m: Pick<FleetMachine, 'name' | 'report'>,
  reach: MachineReach,
  several: boolean,
  shared: SharedJump | undefined,
  connect: FleetOptions['connect'],
  fn: (target: SshTarget) => Promise<void>
): Promise<void> {
  const log = machineLog(m.name, several, m.report.warnings)
  let target: SshTarget | undefined
  try {
    target = await SshTarget.connect(dialer(reach, shared, connect), log)
    await fn(target)
  } catch (e) {
    reportFailure(m.report, e, several ? m.name : '')
  } finally {
    target?.close()
  }
}

/** A new connection to the machine: its target through the shared jump connection, or its own hops. */
function dialer(
  { target, jumps, sudo }: MachineReach,
  shared: SharedJump | undefined,
  connect: FleetOptions['connect']
): () => Promise<RemoteHost> {
  return () => RemoteHost.connect(target, shared ?? jumps, { ...connect, sudo })
}

/**
 * Connects to one machine and deploys it; `failed` when it failed (reported already), with what
 * undoes its activation when that had succeeded before a later step failed.
 */
async function deployOne(
  m: FleetMachine,
  several: boolean,
  shared: SharedJump | undefined,
  deps: DeployDeps,
  opts: FleetOptions
): Promise<DeployOutcome | { failed: true; undo?: UndoRecord }> {
  if (!m.deploy) {
    m.report.result = 'built'
    return { result: {} }
  }
  const { job, target: endpoint } = m.deploy
  const log: Log = machineLog(m.name, several, m.report.warnings)
  const timed = opts.timed(m.report)
  if (several) log.info(`deploying to ${endpoint.label}`)
  let undo: UndoRecord | undefined
  try {
    const fresh = dialer(m.deploy, shared, opts.connect)
    // An early dial that failed during the build is tried once more now, as it would have been.
    const dial = (): Promise<RemoteHost> => opts.early?.take()?.catch(fresh) ?? fresh()
    // Only a deploy that changes the target writes the scripts it keeps there (kept-scripts.ts).
    const target = await timed('connect', () =>
      SshTarget.connect(dial, log, { writesKeptScripts: job.goal.locks })
    )
    const outcome = await deployToTarget(target, job, deps, timed)
    applyMachineResult(m.report, outcome.result)
    undo = outcome.undo
    if (outcome.error !== undefined) throw outcome.error
    if (several) log.info(`${m.report.result}`)
    return outcome
  } catch (e) {
    reportFailure(m.report, e, several ? m.name : '')
    return { failed: true, undo }
  }
}

import { randomBytes } from 'crypto'
import { ActionError, Phase } from '../errors'
import { Inputs } from '../inputs'
import { PathInfo, totalNarSize } from '../nix/closure'
import { RunnerNix } from '../nix/nix'
import { Plan } from '../plan'
import { DeployReport } from '../report/report'
import { diffClosures, parseDryActivate } from '../report/diff'
import { Log, plainLog } from '../report/untrusted'
import { RemoteHost, SharedJump } from '../ssh/connection'
import { shellCommand } from '../ssh/quote'
import { abandonAgent, activate, AgentTracker, readRemoteState, RolledBackError } from './activate'
import { copyClosure, gcRootPath, substituteOnTarget } from './copy'
import { generationsToDelete, LIST_GENERATIONS_SCRIPT, parseGenerations } from './generations'
import { LoadedKey, uploadKeys } from './keys'
import { DeployLock, heldError, LEASE_SECONDS, LOCK_DIR, ownerDescription } from './lock'
import { checkSpace, checkTarget } from './preflight'
import { generationOf, SYSTEM_PROFILE } from './remote-state'
import { TargetSession } from './session'
import {
  listRunningClosure,
  RunningClosure,
  Survey,
  SurveyRequest,
  surveyTarget,
  UnchangedWhen
} from './survey'

export interface BuiltSystem {
  toplevel: string
  hostSystem: string
  closure: PathInfo[]
}

type Timed = <T>(phase: Phase, fn: () => Promise<T>) => Promise<T>

/**
 * connect → preflight → lock → copy → activate → verify for one target. Fills `report` as it goes;
 * throws ActionError (or RolledBackError) on failure, with the target kept on a working system.
 */
export async function deployToTarget(
  inputs: Inputs,
  plan: Plan,
  nix: RunnerNix,
  built: BuiltSystem,
  report: DeployReport,
  timed: Timed,
  machine: {
    name: string
    /** deployment.keys, already read and masked (see loadKeys). */
    keys: LoadedKey[]
    jump?: SharedJump
    /** When the `timeout` input ends the run (epoch ms): no confirmation is sent close to it. */
    runDeadline?: number
    log?: Log
  } = { name: '', keys: [] }
): Promise<void> {
  const target = plan.target!
  const log = machine.log ?? plainLog
  const { toplevel } = built
  const dial = (): Promise<RemoteHost> =>
    RemoteHost.connect(target, machine.jump ?? plan.jump, {
      knownHosts: inputs.knownHosts,
      insecureSkipHostKeyCheck: inputs.insecureSkipHostKeyCheck,
      timeoutMs: inputs.connectTimeoutSeconds * 1000,
      sudo: plan.sudo
    })
  const session = new TargetSession(await timed('connect', dial), dial, log)
  const runId = randomBytes(8).toString('hex')
  const gcRoot = gcRootPath(toplevel, runId)
  const lock = plan.locks
    ? new DeployLock(
        session,
        { dir: LOCK_DIR, id: runId, leaseSeconds: LEASE_SECONDS, description: ownerDescription() },
        log
      )
    : undefined
  // Whether this run holds the lock now, and whether the activation agent may still act (it then
  // keeps the lock until its final state: see AgentTracker).
  let lockHeld = false
  const agent: AgentTracker = { started: false, finished: false }
  // The GC root the survey places on the target for the new system; removed once the profile (or
  // /run/current-system) holds it, or at the end when the run stops before activating.
  let gcRootPlaced = false
  // The package diff, once the running system's closure is listed (a failed deploy reports it too).
  let diffed: Promise<void> = Promise.resolve()
  const releaseGcRoot = async (): Promise<void> => {
    if (!gcRootPlaced) return
    gcRootPlaced = false
    await session
      .exec(shellCommand(['rm', '-f', gcRoot]), { timeoutMs: 60_000, what: 'removing the GC root' })
      .catch(() => undefined)
  }
  try {
    if (plan.sudo) await timed('connect', () => checkSudo(session, target.user))
    // NixOps' deployment.keys, for the modes that run or boot the system (dry runs change nothing).
    const keys = plan.mode === 'dry-activate' ? [] : machine.keys
    const survey = await timed('connect', () =>
      surveyUnderLock(session, inputs.lockTimeoutSeconds, report, {
        toplevel,
        closure: built.closure,
        gcRoot,
        unchangedWhen: unchangedWhen(plan),
        releaseIfUnchanged: keys.length === 0,
        lock: lock?.request
      })
    )
    lockHeld = lock !== undefined && !(survey.kind === 'unchanged' && survey.lockReleased)
    if (lockHeld) lock!.startRenewing()
    gcRootPlaced = survey.kind === 'changed'
    const before = survey.state
    report.previousStorePath = before.current
    log.info(
      `${session.label} runs ${before.current ?? '(no /run/current-system)'}; profile ${before.profile ?? '(none)'}`
    )
    checkTarget(before, session.label, built.hostSystem)
    if (before.uid !== 0)
      throw new ActionError(
        `commands on ${session.label} run as uid ${before.uid}, not root: setting the system profile and activating need root`,
        'Use target-user: root, or a user with passwordless sudo (sudo: auto turns it on for non-root users).',
        'connect'
      )

    if (survey.kind === 'unchanged') {
      // The keys live in /run/keys (lost on reboot): a re-deploy restores them, as NixOps did.
      if (keys.length > 0) await timed('activate', () => uploadKeys(session, log, keys))
      report.result = 'unchanged'
      report.changed = false
      report.copiedBytes = 0
      report.copiedPaths = 0
      report.generation = plan.setsProfile ? generationOf(before.profileLink) : undefined
      log.info(`${session.label} already runs ${toplevel}: nothing to do`)
      return
    }
    // The running system's closure, for the package diff only: listed under the lock (what runs
    // cannot change under us now), alongside the copy, read before the activation.
    diffed = listRunningClosure(session)
      .then(c => packageDiff(c, session.label, built, before.current!, report, log))
      .catch((e: unknown) => log.info(`No package diff: ${(e as Error).message}`))
    if (survey.copy instanceof ActionError) throw survey.copy
    const copyPlan = survey.copy

    // --- copy
    const copied = await timed('copy', async () => {
      checkSpace(before, session.label, totalNarSize(copyPlan.toCopy))
      const { plan: rest, substituted } = inputs.substituteOnDestination
        ? await substituteOnTarget(session, copyPlan)
        : { plan: copyPlan, substituted: [] }
      report.substitutedPaths = substituted.length
      report.substitutedBytes = totalNarSize(substituted)
      return copyClosure(session, nix, rest, built.closure.length, inputs.compression, log)
    })
    report.copiedBytes = copied.narBytes
    report.copiedPaths = copied.copiedPaths.length
    report.wireBytes = copied.wireBytes
    report.compression = copied.codec
    await timed('copy', () => diffed)

    // --- activate (only while this run still holds the lock: the agent's start checks it too)
    if (lock?.lost) await lock.assertHeld()
    if (keys.length > 0) await timed('activate', () => uploadKeys(session, log, keys))
    try {
      const outcome = await timed('activate', () =>
        activate(
          session,
          plan,
          { ...inputs, runDeadline: machine.runDeadline },
          toplevel,
          before,
          lockHeld ? lock!.request : undefined,
          agent
        )
      )
      report.generation = outcome.generation
      report.activationLog = outcome.log
      if (plan.mode === 'dry-activate') report.dryActivate = parseDryActivate(outcome.log)
      report.healthChecks = outcome.healthChecks
      report.confirmed = outcome.outcome === 'confirmed' ? 'over a new connection' : undefined
    } catch (e) {
      if (e instanceof RolledBackError) {
        report.result = 'rolled-back'
        report.rolledBackTo = e.rolledBackTo
      }
      throw e
    } finally {
      // The profile (switch, boot) or /run/current-system (test) holds the system now; a dry run's
      // or a rolled-back system's paths may be collected by the target's GC again.
      await releaseGcRoot()
    }

    // --- verify
    await timed('verify', async () => {
      const after = await readRemoteState(session)
      const problems = [
        plan.changesRunningSystem && after.current !== toplevel && `it runs ${after.current ?? 'nothing'}`,
        plan.setsProfile &&
          after.profile !== toplevel &&
          `its system profile is ${after.profile ?? 'missing'}`
      ].filter(Boolean)
      if (problems.length > 0)
        throw new ActionError(
          `switch-to-configuration ${plan.mode} succeeded, but ${session.label} did not take ${toplevel}: ${problems.join(', ')}`,
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
      if (inputs.keepGenerations !== undefined && plan.setsProfile)
        report.deletedGenerations = await pruneGenerations(
          session,
          inputs.keepGenerations,
          generationOf(after.profileLink),
          log
        )
    })
  } finally {
    await diffed
    await releaseGcRoot()
    if (lock && lockHeld) {
      // An agent that may still roll back keeps the lock (it renews it) until its final state.
      if (!agent.started || agent.finished || (await abandonAgent(session, agent))) await lock.release()
      else lock.stopRenewing()
    }
    session.close()
  }
}

/** What "already deployed" means for a plan's mode (colmena's goal): nothing counts for a dry run. */
export function unchangedWhen(plan: Pick<Plan, 'mode'>): UnchangedWhen {
  return plan.mode === 'switch' || plan.mode === 'boot' || plan.mode === 'test' ? plan.mode : 'never'
}

const LOCK_POLL_MS = 2_000

/**
 * Surveys the target (see SURVEY_SCRIPT), waiting while another run holds its deploy lock; each poll
 * is the survey again, which answers right after the lock when it is held. So the state this run
 * decides on is always read under its own lock.
 */
async function surveyUnderLock(
  session: TargetSession,
  lockTimeoutSeconds: number,
  report: DeployReport,
  req: SurveyRequest
): Promise<Exclude<Survey, { kind: 'held' }>> {
  const started = Date.now()
  let announced = false
  for (;;) {
    const survey = await surveyTarget(session, req)
    if (survey.kind !== 'held') {
      if (announced) report.lockWaitMs = Date.now() - started
      return survey
    }
    const waited = (Date.now() - started) / 1000
    if (waited >= lockTimeoutSeconds) throw heldError(session.label, survey.holder, waited)
    if (!announced) {
      session.log.info(
        `Waiting for the deploy lock on ${session.label}, held by ${survey.holder.description || survey.holder.id}`
      )
      announced = true
    }
    await new Promise(r => setTimeout(r, LOCK_POLL_MS))
  }
}

/** The package diff against what the target runs now; a failure here only costs the diff. */
function packageDiff(
  closure: RunningClosure,
  label: string,
  built: BuiltSystem,
  current: string,
  report: DeployReport,
  log: Log
): void {
  if ('error' in closure) {
    // The target's own words: shown, never obeyed.
    log.info("No package diff: listing the target's closure failed:")
    log.untrusted(closure.error)
    return
  }
  report.diff = diffClosures(closure.entries, built.closure)
  report.diffBaseline = `what ${label} runs (${current})`
}

async function checkSudo(session: TargetSession, user: string): Promise<void> {
  const r = await session.exec('true', { timeoutMs: 30_000, what: 'checking sudo' })
  if (r.exitCode !== 0)
    throw new ActionError(
      /password|terminal|askpass/i.test(r.stderr)
        ? `sudo on the target asks ${user} for a password (sudo -n refuses to prompt)`
        : `sudo -n does not work for ${user} on the target: ${r.stderr.trim().slice(-300)}`,
      `Allow ${user} passwordless sudo on the target (NixOS: security.sudo.extraRules with NOPASSWD, or security.sudo.wheelNeedsPassword = false), or deploy as root.`,
      'connect'
    )
}

/** Deletes system generations beyond the newest `keep`, never the running, booted or current one. */
async function pruneGenerations(
  session: TargetSession,
  keep: number,
  profileGeneration: number | undefined,
  log: Log
): Promise<number[]> {
  const r = await session.exec(shellCommand(['sh', '-c', LIST_GENERATIONS_SCRIPT, 'sh']), {
    timeoutMs: 60_000,
    what: 'listing generations'
  })
  const running = /^running (\S+)$/m.exec(r.stdout)?.[1]
  const booted = /^booted (\S+)$/m.exec(r.stdout)?.[1]
  const doomed = generationsToDelete(parseGenerations(r.stdout), keep, {
    profileGeneration,
    runningPath: running,
    bootedPath: booted
  })
  if (doomed.length === 0) return []
  const del = await session.exec(
    shellCommand(['nix-env', '-p', SYSTEM_PROFILE, '--delete-generations', ...doomed.map(String)]),
    { timeoutMs: 120_000, what: 'deleting old generations' }
  )
  if (del.exitCode !== 0) {
    log.warning(`could not delete old generations ${doomed.join(', ')}: ${del.stderr.trim().slice(-300)}`)
    return []
  }
  log.info(`Deleted old system generations ${doomed.join(', ')} (keep-generations: ${keep})`)
  return doomed
}

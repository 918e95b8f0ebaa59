import { randomBytes } from 'crypto'
import { ActionError, errorMessage, LockTakenError, Phase } from '../errors'
import { BootFile, BootIdentity, needsReboot } from '../nix/boot'
import { PathInfo, totalNarSize } from '../nix/closure'
import type { DeployUserFacts } from '../nix/deploy-user-facts'
import { diffClosures, parseDryActivate } from '../report/diff'
import { MachineResult } from '../report/report'
import { generationOf, PendingTrial, RemoteState } from '../target/remote-state'
import { BinaryCache, CopyPlan, RunningClosure, Survey, SurveyRequest, Target } from '../target/target'
import { formatBytes } from '../log/format'
import { activate, ActivationSettings, AgentTracker, RolledBackError } from './activate'
import { CompressionSetting } from './compression'
import { CopyResult, gcRootPath, substituteOnTarget } from './copy'
import { changedBy, Goal, goalOf, verifyProblems } from './goal'
import { LoadedKey, uploadKeys } from './deployment-keys'
import { DeployLock, heldError, LOCK_POLL_MS, lockRequest } from '../target/lock/runner'
import type { LockRequest } from '../target/lock/on-target'
import { checkBootSpace, checkSpace, checkTarget } from './preflight'
import {
  BootTrial,
  DEFAULT_REBOOT_TIMEOUT_SECONDS,
  rebootInto,
  RebootIntoSettings,
  RebootSettings,
  rebootsFor,
  settleTrial
} from './reboot'
import { pruneGenerations } from './prune'
import { leavePlanRecord, UndoRecord } from './revert'
import type { PlanRecord, PlanStamp } from '../target/plan-record'

export interface BuiltSystem {
  toplevel: string
  hostSystem: string
  closure: PathInfo[]
  /** Its kernel, initrd, modules and parameters, read on the runner: does it need a reboot? */
  boot?: BootIdentity
  /** Its kernel and initrd as a boot loader copies them to /boot (names and sizes). */
  bootFiles?: BootFile[]
  /** Its boot trial's protocol (nixos/boot-trial.nix), if it has one: a reboot into it is then on trial. */
  bootTrialProtocol?: number
  /** What a deploy user's gate checks of it (undefined only from a deploy plan of an earlier release). */
  deployUser?: DeployUserFacts
  /**
   * The binary cache it was published to (a deploy plan's): the target substitutes from it, and
   * only what it cannot fetch goes through the runner (which fetches that from the cache first).
   */
  cache?: BinaryCache
}

/** How long a failed deploy tries to leave its plan record (the target may be gone). */
const RECORD_FAILURE_TIMEOUT_MS = 20_000

/** Everything one machine's deploy needs, decided before it starts (plan.ts builds it). */
export interface DeployJob {
  /** The machine's name in a network file ('' otherwise). */
  name: string
  goal: Goal
  built: BuiltSystem
  /** With sudo: the target user whose `sudo -n` must work. */
  sudoUser?: string
  /** deployment.keys, already read and masked (see loadKeys). */
  keys: LoadedKey[]
  activation: ActivationSettings
  lockTimeoutSeconds: number
  keepGenerations?: number
  compression: CompressionSetting
  substituteOnDestination: boolean
  /** Whether (and how long) to reboot into the new system; default never. */
  reboot?: RebootSettings
  /** A deploy plan's shard: the plan record it leaves on the machine (src/target/plan-record.ts). */
  planStamp?: PlanStamp
}

/** What the deploy needs from the runner side: the copy of store paths (see copyClosure). */
export interface DeployDeps {
  copy(
    target: Target,
    plan: CopyPlan,
    closurePathCount: number,
    compression: CompressionSetting
  ): Promise<CopyResult>
  /** Before anything changes on a deploy user's gate: what it will refuse (see checkGatedDeploy). */
  checkGated?(label: string, job: DeployJob): void
  /**
   * The public half of signing-key, when the runner signs what it copies: a deploy user's gate
   * imports nothing else.
   */
  signingPublicKey?: string
  /** Fetches `paths` (and their closures) from a binary cache into the runner's store. */
  fetchFromCache(cache: BinaryCache, paths: string[]): Promise<void>
}

export type Timed = <T>(phase: Phase, fn: () => Promise<T>) => Promise<T>

/** A deploy's end: what it found and did (also when it failed), and the failure if any. */
export interface DeployOutcome {
  result: MachineResult
  error?: unknown
  /**
   * Set when this deploy activated a system without rebooting, also when a step after that failed
   * (its last command, the checks of what it runs): how a fleet rollback undoes it.
   */
  undo?: UndoRecord
}

/**
 * One machine's deploy over a Target, as named steps: preflight → under the lock: state →
 * unchanged? → copy → activate → verify → prune. Each step returns what it found; the result is
 * assembled here and returned, with the failure (an ActionError, or a RolledBackError when the
 * target is back on what it ran) when there was one. The target keeps or gets back a working
 * generation whatever happens.
 */
export async function deployToTarget(
  target: Target,
  job: DeployJob,
  deps: DeployDeps,
  timed: Timed
): Promise<DeployOutcome> {
  const run = new DeployRun(target, job, deps, timed)
  try {
    await run.steps()
    return { result: run.result, undo: run.undo }
  } catch (e) {
    if (e instanceof RolledBackError)
      Object.assign(run.result, { result: 'rolled-back', rolledBackTo: e.rolledBackTo })
    await run.recordFailure(e)
    return { result: run.result, error: e, undo: run.undoAfterFailure(e) }
  } finally {
    await run.cleanUp()
  }
}

/** The state of one deploy while its steps run (see deployToTarget). */
class DeployRun {
  readonly result: MachineResult = {}
  private readonly runId = randomBytes(8).toString('hex')
  private readonly gcRoot: string
  private readonly lock: DeployLock | undefined
  /** The lock while this run holds it (the survey took it, and did not release it at once). */
  private held: DeployLock | undefined
  private gcRootPlaced = false
  private readonly agent: AgentTracker = { started: false, finished: false }
  /** What undoes this deploy's activation (rollback-fleet), once it succeeded. */
  undo: UndoRecord | undefined
  /** What the target ran before, once this deploy (holding the lock) is to change it: a failure is recorded from then. */
  private recordFrom: RemoteState | undefined
  /** The plan record this deploy last wrote. */
  private recorded: PlanRecord['state'] | undefined
  /** The deployed record, while the last command that writes it is under way. */
  private deployedRecordSent: { record: PlanRecord; lock: LockRequest } | undefined

  constructor(
    private readonly target: Target,
    private readonly job: DeployJob,
    private readonly deps: DeployDeps,
    private readonly timed: Timed
  ) {
    this.gcRoot = gcRootPath(job.built.toplevel, this.runId)
    this.lock = job.goal.locks ? new DeployLock(target, lockRequest(this.runId), target.log) : undefined
  }

  async steps(): Promise<void> {
    const { target, job, timed } = this
    if (target.store.importsSignedOnly)
      await timed('connect', async () => this.deps.checkGated?.(target.label, job))
    if (job.sudoUser !== undefined) await timed('connect', () => target.checkSudo(job.sudoUser!))
    const keys = job.goal.uploadsKeys ? job.keys : []
    const rebootWhen = job.reboot?.when ?? 'never'
    // With reboot on, a target that already runs the system may still need to boot it: keep the lock.
    // A plan's shard keeps the lock on an unchanged target too: its record is written under it.
    const survey = await timed('connect', () =>
      this.surveyUnderLock(keys.length === 0 && rebootWhen === 'never' && !job.planStamp)
    )
    if (survey.kind !== 'unchanged') this.recordFrom = survey.state
    const before = this.preflight(survey)
    // Only a run that changes the target (and holds its lock) settles an earlier run's trial.
    const earlier = job.goal.locks ? before.trial : undefined
    if (earlier && earlier.system === job.built.toplevel && before.booted?.system === earlier.system) {
      await timed('verify', () => this.settleEarlierTrial(before, earlier, keys))
      // A trial that booted the system once made it the profile only now: nothing is left to do.
      if (survey.kind !== 'unchanged') {
        const now = await target.readState()
        if (now.current === job.built.toplevel && now.profile === job.built.toplevel)
          return this.unchanged(now, [], false)
      }
    }
    const reboots = rebootsFor(job.goal, rebootWhen, this.result.needsReboot)
    if (survey.kind === 'unchanged')
      return this.unchanged(before, keys, reboots && this.result.needsReboot === true)
    this.packageDiff(before, survey.running)
    if (survey.copy instanceof Error) throw survey.copy
    await this.record('started', before)
    await this.copy(before, survey.copy)
    // Only while this run still holds the lock (the agent's start checks it too).
    if (this.lock?.lost) await this.lock.assertHeld()
    if (keys.length > 0) await timed('activate', () => uploadKeys(target, keys))
    if (reboots) {
      await this.activate(before, goalOf('boot'))
      await this.rebootIntoNewSystem(before, keys)
    } else await this.activate(before)
    // Still under the lock: verify's last command writes the deployed record, then releases it.
    await timed('verify', () => this.verify(before))
  }

  /**
   * A deploy of a plan's shard leaves its record on the machine (src/target/plan-record.ts), under
   * the lock: `started` once it is to change the machine, then `deployed` with the way back, or why
   * it failed. The fleet's report job reads it.
   */
  private async record(state: 'started' | 'unchanged', before: RemoteState): Promise<void> {
    const toWrite = this.recordToWrite(state, before)
    if (!toWrite) return
    const wrote = await this.timed(state === 'started' ? 'copy' : 'activate', () =>
      this.target.writePlanRecord(toWrite.record, toWrite.lock)
    )
    this.wroteRecord(toWrite.record, wrote)
  }

  /** The plan record to write in `state` and the lock it is written under; undefined: none to write. */
  private recordToWrite(
    state: 'started' | 'deployed' | 'unchanged',
    before: RemoteState
  ): { record: PlanRecord; lock: LockRequest } | undefined {
    const { job, undo } = this
    if (!job.planStamp || job.goal.mode === 'dry-activate') return undefined
    const lock = this.held?.request
    // Only a deploy that holds the lock changes anything (dry-activate takes none: returned above).
    if (!lock) return undefined
    const earlier = before.planRecord
    if (state === 'unchanged' && earlier?.plan === job.planStamp.plan) {
      // A re-run of the same plan's shard keeps what an earlier attempt recorded (the way back;
      // why it failed: an unchanged machine is not checked again, so its failure stands)...
      if (earlier.state !== 'started') return undefined
      // ... unless that attempt stopped before it recorded its end (cancelled, its link lost): the
      // machine runs the plan's system, so this run records that, with that attempt's way back,
      // or the fleet's report would go on waiting for the attempt's end.
      return { record: this.redeployedRecord(earlier, before), lock }
    }
    const record: PlanRecord = {
      // What it ran before this plan: none when it ran the plan's system already.
      ...this.planRecord(state, state === 'unchanged' ? undefined : before),
      generation: state === 'deployed' ? undo?.generation : undefined,
      createdNew: state === 'deployed' ? undo?.createdNew : undefined,
      // A reboot is not undone by an activation (no undo record then): rollback-fleet leaves it.
      rebooted: state === 'deployed' && undo === undefined ? true : undefined
    }
    return { record, lock }
  }

  /**
   * The record of a re-run that found the machine on the plan's system, left there by an earlier
   * attempt of the plan that recorded only its start: deployed, with what that attempt recorded the
   * machine ran before. The generation is the profile's, which that attempt may not have made
   * (createdNew false: a rollback keeps it); a machine that booted the system is not undone.
   */
  private redeployedRecord(earlier: PlanRecord, now: RemoteState): PlanRecord {
    const system = this.job.built.toplevel
    return {
      ...this.planRecord('deployed', undefined),
      beforeCurrent: earlier.beforeCurrent,
      beforeProfile: earlier.beforeProfile,
      beforeGeneration: earlier.beforeGeneration,
      generation: now.profile === system ? generationOf(now.profileLink) : undefined,
      createdNew: now.profile === system ? false : undefined,
      rebooted: now.booted?.system === system && earlier.beforeCurrent !== system ? true : undefined
    }
  }

  /** What a written plan record changes for the rest of the deploy. */
  private wroteRecord(record: PlanRecord, wrote: 'written' | 'not-held'): void {
    // Another run holds the lock now: what this one does next fails on that too (assertHeld).
    if (wrote === 'not-held') return
    this.recorded = record.state
    // The shard's own rollback-fleet (several machines in it) says so on each machine it puts back.
    if (record.state === 'deployed' && this.undo)
      this.undo.recordWhenBack = { ...record, state: 'rolled-back', byRollbackFleet: true }
  }

  /** This deploy's plan record in `state`, with what the target ran before this deploy, if given. */
  private planRecord(state: PlanRecord['state'], before: RemoteState | undefined): PlanRecord {
    const { job } = this
    return {
      ...job.planStamp!,
      state,
      system: job.built.toplevel,
      mode: job.goal.mode,
      beforeCurrent: before?.current,
      beforeProfile: before?.profile,
      beforeGeneration: generationOf(before?.profileLink)
    }
  }

  /**
   * The plan record of a deploy that failed after it took the lock to change the target, while it
   * still holds it (another run's record is never overwritten), best effort and briefly: the target
   * may be gone. A deployed record stays unless the target went back: it runs the plan's system.
   */
  async recordFailure(e: unknown): Promise<void> {
    const { job, target, recordFrom } = this
    const lock = this.held?.request
    if (!job.planStamp || recordFrom === undefined || !lock || this.held?.lost) return
    const rolledBack = e instanceof RolledBackError
    if (this.recorded === 'deployed' && !rolledBack) return
    // The last command went out with the deployed record and did not write it, or never answered
    // (a lost link; it may have): the activation succeeded, so the record says deployed, not
    // failed. (A link that dies silently is noticed after ~30 s, when the agent, no longer waiting
    // for the action, has released the lock itself: then nothing is written and it says started.)
    const sent = this.deployedRecordSent
    const record = sent
      ? sent.record
      : { ...this.planRecord(rolledBack ? 'rolled-back' : 'failed', recordFrom), message: errorMessage(e) }
    await leavePlanRecord(target, record, lock, RECORD_FAILURE_TIMEOUT_MS)
  }

  /**
   * A deploy that failed after its activation succeeded (its last command, the checks after it):
   * the machine may run the new system, so rollback-fleet still puts it back (only while it runs
   * it: movedOn), and its record then says that its own deploy failed, not that another's did.
   */
  undoAfterFailure(e: unknown): UndoRecord | undefined {
    const { undo, job, recordFrom } = this
    // (An agent's own rollback throws before the undo is set: checked all the same.)
    if (!undo || e instanceof RolledBackError) return undefined
    const failed =
      job.planStamp && recordFrom
        ? { ...this.planRecord('rolled-back', recordFrom), message: errorMessage(e) }
        : undefined
    return { ...undo, recordWhenBack: failed, leftLock: this.held?.request }
  }

  /**
   * The new system is the profile and the boot default (activated as `boot`): reboot into it,
   * wait for it, and check it runs. The deploy lock's lease does not outlive the target's boot
   * (see lock.sh): this run renews it again once the target is back, and fails if another run
   * took it over meanwhile. deployment.keys live in /run, which a boot empties: uploaded again
   * before the health checks.
   */
  private async rebootIntoNewSystem(before: RemoteState, keys: LoadedKey[]): Promise<void> {
    const { target, job } = this
    const trial = this.bootTrial(before)
    if (trial?.once !== undefined)
      target.log.info(
        `${target.label} boots the new system once (its boot loader's one-shot entry, ${trial.once}); its previous system stays the default until this run confirms the new one`
      )
    else if (trial)
      // What this target's boot loader does not cover (docs/safety.md, "A broken boot"): said before it happens.
      target.log.warning(
        `the boot trial brings ${target.label} back from a new system that reaches user space; a new kernel that panics, or an initrd that cannot mount its root, is not covered on this target (no one-shot boot set up: services.nix-deploy-action.bootTrial.bootOnce) and would need hands on it (its boot menu keeps the previous generation)`
      )
    else
      target.log.warning(
        `rebooting ${target.label} into the new system without a boot trial${job.built.bootTrialProtocol !== undefined ? '' : ' (the new system lacks nixos/boot-trial.nix)'}: if it does not boot, or boots without SSH, it needs hands on the target (its boot menu keeps the previous generation)`
      )
    this.held?.stopRenewing()
    try {
      const back = await this.timed('activate', () =>
        rebootInto(
          target,
          job.built.toplevel,
          this.afterBootSettings(),
          before.bootId,
          () => this.afterBoot(keys),
          trial
        )
      )
      Object.assign(this.result, {
        rebootMs: back.ms,
        rebootConfirmedMs: back.confirmedMs,
        bootTrial: trial ? 'confirmed' : undefined,
        bootOnce: back.once === true ? true : undefined,
        healthChecks: back.healthReport ?? this.result.healthChecks
      })
    } catch (e) {
      if (trial && e instanceof RolledBackError) this.result.bootTrial = 'went-back'
      throw e
    }
  }

  /**
   * The boot trial for this reboot, when the new system has it (nixos/boot-trial.nix) and magic
   * rollback is on: back to the profile as it was before this deploy (its generation), or, when
   * the profile already held the new system (deployed earlier without a reboot), to what booted.
   */
  private bootTrial(before: RemoteState): BootTrial | undefined {
    const { job, target } = this
    const protocol = job.built.bootTrialProtocol
    if (protocol === undefined || !job.activation.magicRollback) return undefined
    const fromProfile = before.profile !== undefined && before.profile !== job.built.toplevel
    const previous = fromProfile ? before.profile : before.booted?.system
    if (previous === undefined || previous === job.built.toplevel) return undefined
    const rebootSeconds = job.reboot!.timeoutSeconds
    const windows =
      protocol >= 2
        ? { loginSeconds: rebootSeconds, confirmSeconds: job.activation.confirmTimeoutSeconds }
        : // One window from the trial's start to the confirmation: room for the boot too.
          { confirmSeconds: rebootSeconds + job.activation.confirmTimeoutSeconds }
    if (protocol < 2)
      target.log.warning(
        `the new system's boot trial (nixos/boot-trial.nix) is older than this action: it waits ${windows.confirmSeconds} s from its start for the confirmation, the boot included. Update the module from this action's release to have it wait for the first login first`
      )
    return {
      previous,
      previousGeneration: fromProfile ? generationOf(before.profileLink) : undefined,
      ...windows,
      lock: this.held?.request,
      once: before.bootOnce
    }
  }

  /**
   * The target booted this very system on a trial that an earlier run started and never settled
   * (it was cancelled after its reboot): this run checks it as that run would have, and confirms it
   * or has it go back. Its lock was this run's to take over (lock.sh).
   */
  private async settleEarlierTrial(
    before: RemoteState,
    earlier: PendingTrial,
    keys: LoadedKey[]
  ): Promise<void> {
    const { target } = this
    this.result.earlierTrial = true
    target.log.info(
      `${target.label} runs ${earlier.system} on a boot trial that an earlier run started and did not settle: checking and confirming it`
    )
    const { stage: _stage, system: _system, ...trial } = earlier
    try {
      const settled = await settleTrial(target, before.bootId, trial, this.afterBootSettings(), () =>
        this.afterBoot(keys)
      )
      Object.assign(this.result, {
        bootTrial: 'confirmed',
        rebootConfirmedMs: settled.confirmedMs,
        healthChecks: settled.healthReport ?? this.result.healthChecks
      })
    } catch (e) {
      if (e instanceof RolledBackError) this.result.bootTrial = 'went-back'
      throw e
    }
  }

  /** What follows a boot: its checks and the reboot's timing (a run without `reboot` settling an earlier trial: the default). */
  private afterBootSettings(): RebootIntoSettings {
    const { job } = this
    return {
      ...(job.reboot ?? { when: 'never', timeoutSeconds: DEFAULT_REBOOT_TIMEOUT_SECONDS }),
      healthChecks: job.activation.healthChecks,
      healthTimeoutSeconds: job.activation.healthTimeoutSeconds,
      runDeadline: job.activation.runDeadline
    }
  }

  /** Back from the reboot: the lock again (or fail: another run took it), then the keys. */
  private async afterBoot(keys: LoadedKey[]): Promise<void> {
    if (this.held) {
      if (!(await this.held.renew()))
        throw new LockTakenError(
          `another deploy took the deploy lock on ${this.target.label} while it rebooted`,
          'The target booted the new system; the other run (a run of the same system takes over its boot trial) checks and settles it, or may change it again. Check what it runs now.',
          'verify'
        )
      this.held.startRenewing()
    }
    if (keys.length > 0) await uploadKeys(this.target, keys)
  }

  /** The survey (see survey.sh), waiting while another run holds the lock: each poll is the survey again. */
  private async surveyUnderLock(releaseIfUnchanged: boolean): Promise<Exclude<Survey, { kind: 'held' }>> {
    const { target, job } = this
    const req: SurveyRequest = {
      toplevel: job.built.toplevel,
      closure: job.built.closure,
      // The target fetches a deploy plan's system from its cache: it can list the closure from there too.
      closureFrom: job.substituteOnDestination ? job.built.cache?.uri : undefined,
      gcRoot: this.gcRoot,
      unchangedWhen: job.goal.unchangedWhen,
      releaseIfUnchanged,
      lock: this.lock?.request
    }
    const started = Date.now()
    let announced = false
    for (;;) {
      const survey = await target.survey(req)
      if (survey.kind !== 'held') {
        if (announced) this.result.lockWaitMs = Date.now() - started
        this.held = survey.kind === 'unchanged' && survey.lockReleased ? undefined : this.lock
        this.held?.startRenewing()
        this.gcRootPlaced = survey.kind === 'changed'
        return survey
      }
      const waited = (Date.now() - started) / 1000
      if (waited >= job.lockTimeoutSeconds) throw heldError(target.label, survey.holder, waited)
      if (!announced) {
        target.log.info(
          `Waiting for the deploy lock on ${target.label}, held by ${survey.holder.description || survey.holder.id}`
        )
        announced = true
      }
      await new Promise(r => setTimeout(r, LOCK_POLL_MS))
    }
  }

  /** Whether this is a NixOS target of the right platform we may deploy to, as root. */
  private preflight(survey: Exclude<Survey, { kind: 'held' }>): RemoteState {
    const { target, job } = this
    const before = survey.state
    this.result.previousStorePath = before.current
    this.result.needsReboot = needsReboot(before.booted, job.built.boot)
    target.log.info(
      `${target.label} runs ${before.current ?? '(no /run/current-system)'}; profile ${before.profile ?? '(none)'}`
    )
    checkTarget(before, target.label, job.built.hostSystem)
    // Only the modes that install a boot loader entry add to /boot.
    if (job.goal.setsProfile) checkBootSpace(before, target.label, job.built.bootFiles ?? [])
    if (before.uid !== 0)
      throw new ActionError(
        `commands on ${target.label} run as uid ${before.uid}, not root: setting the system profile and activating need root`,
        'Use target-user: root, or a user with passwordless sudo (sudo: auto turns it on for non-root users).',
        'connect'
      )
    return before
  }

  /**
   * The target already has the system as the mode asks. With `reboot` and a kernel it has not
   * booted yet (an earlier deploy without reboot), it reboots into it now; the result stays
   * `unchanged` (nothing was copied or activated).
   */
  private async unchanged(before: RemoteState, keys: LoadedKey[], reboot: boolean): Promise<void> {
    if (reboot) {
      this.target.log.info(
        `${this.target.label} already has ${this.job.built.toplevel} but booted ${before.booted?.system ?? 'another system'}: rebooting into it`
      )
      await this.rebootIntoNewSystem(before, keys)
    }
    // The keys live in /run/keys (lost on reboot): a re-deploy restores them, as NixOps did.
    else if (keys.length > 0) await this.timed('activate', () => uploadKeys(this.target, keys))
    Object.assign(this.result, {
      result: 'unchanged',
      changed: false,
      copiedBytes: 0,
      copiedPaths: 0,
      generation: this.job.goal.setsProfile ? generationOf(before.profileLink) : undefined
    })
    await this.record('unchanged', before)
    this.target.log.info(`${this.target.label} already runs ${this.job.built.toplevel}: nothing to do`)
  }

  /** The running system's closure (the survey's, under the lock) against the new one. */
  private packageDiff(before: RemoteState, running: RunningClosure): void {
    const { target, job } = this
    if ('error' in running) {
      target.log.info(`No package diff: ${running.error}`)
      return
    }
    this.result.diff = diffClosures(running.entries, job.built.closure, {
      before: before.current,
      after: job.built.toplevel
    })
    // Which system it runs is the diff's System line.
    this.result.diffBaseline = `what ${target.label} runs`
  }

  private async copy(before: RemoteState, plan: CopyPlan): Promise<void> {
    const { target, job, timed } = this
    const copied = await timed('copy', async () => {
      checkSpace(before, target.label, totalNarSize(plan.toCopy))
      const { cache } = job.built
      const { plan: rest, substituted } = job.substituteOnDestination
        ? await substituteOnTarget(target, plan, cache, job.built.toplevel)
        : { plan, substituted: [] }
      this.result.substitutedPaths = substituted.length
      this.result.substitutedBytes = totalNarSize(substituted)
      if (job.substituteOnDestination)
        this.result.substitutedFrom = plan.cacheUnanswered ? undefined : cache?.uri
      if (cache && rest.toCopy.length > 0) {
        // A deploy plan's runner has none of the closure: what the target could not fetch itself,
        // the runner fetches from the cache and copies through the tunnel, as without a plan.
        target.log.warning(
          `${target.label} did not fetch ${rest.toCopy.length} of the closure's paths (${formatBytes(totalNarSize(rest.toCopy))}) from ${cache.uri}${job.substituteOnDestination ? '' : ' (substitute-on-destination is false)'}: the runner fetches them and copies them through the SSH connection`
        )
        const signing = this.deps.signingPublicKey
        if (target.store.importsSignedOnly && !signing)
          throw new ActionError(
            `${target.label} logs in as a deploy user, which imports only signed store paths: it did not fetch ${rest.toCopy.length} of the closure's paths from ${cache.uri}, and without signing-key the runner cannot copy them to it`,
            `Let ${target.label} reach ${cache.uri}, and check that the build signed with the key whose public half is its services.nix-deploy-action.deployUser.signingPublicKey (the plan's cache key is ${cache.publicKey}); or set signing-key to that key here. The target's system was not changed.`,
            'copy'
          )
        // The runner re-signs what it fetched with signing-key, which the gate trusts: only what
        // that key signed in the first place, or a plan from elsewhere would get anything in.
        if (target.store.importsSignedOnly && signing !== cache.publicKey)
          throw new ActionError(
            `${target.label} logs in as a deploy user, which imports only paths signed with signing-key (${signing}); it did not fetch ${rest.toCopy.length} of the closure's paths from ${cache.uri}, and the deploy plan's cache key is another (${cache.publicKey}), so the runner does not sign them for it`,
            `Give this job the deploy plan of a build job that published with this signing-key (its public half is the plan's cache key), or let ${target.label} reach ${cache.uri}. The target's system was not changed.`,
            'copy'
          )
        await this.deps.fetchFromCache(
          cache,
          rest.toCopy.map(p => p.path)
        )
      }
      return this.deps.copy(target, rest, job.built.closure.length, job.compression)
    })
    Object.assign(this.result, {
      copiedBytes: copied.narBytes,
      copiedPaths: copied.copiedPaths.length,
      wireBytes: copied.wireBytes,
      compression: copied.codec
    })
  }

  /** The activation as the job's goal says, or as `boot` (profile and boot entry only) before a reboot. */
  private async activate(before: RemoteState, goal: Goal = this.job.goal): Promise<void> {
    const { target, job } = this
    // Nothing new runs after a `boot` activation (before a reboot, or mode boot without one): no
    // confirmation to wait for; the checks come after the reboot, if any.
    const settings =
      goal === job.goal && goal.changesRunningSystem
        ? job.activation
        : { ...job.activation, magicRollback: false, healthChecks: [] }
    // The deploy's own activation is followed only by verify, whose one command (wrapUp) removes
    // the agent's directory and the GC root: once it succeeded, they are left for it.
    const verifyCleansUp = goal === job.goal
    this.agent.leaveDir = verifyCleansUp
    let succeeded = false
    try {
      const outcome = await this.timed('activate', () =>
        activate(target, goal, settings, job.built.toplevel, before, this.held?.request, this.agent)
      )
      Object.assign(this.result, {
        generation: outcome.generation,
        activationLog: outcome.log,
        dryActivate: job.goal.mode === 'dry-activate' ? parseDryActivate(outcome.log) : undefined,
        healthChecks: outcome.healthChecks,
        confirmed: outcome.outcome === 'confirmed' ? 'over a new connection' : undefined
      })
      // A reboot is not undone by an activation: a rebooted machine keeps what it booted.
      if (goal === job.goal && goal.mode !== 'dry-activate')
        this.undo = {
          toplevel: job.built.toplevel,
          goal,
          before,
          generation: outcome.generation,
          createdNew: outcome.createdNew ?? false,
          settings: { ...job.activation, magicRollback: false, healthChecks: [] },
          lockTimeoutSeconds: job.lockTimeoutSeconds
        }
      succeeded = true
    } finally {
      // The profile (switch, boot) or /run/current-system (test) holds the system now; a dry run's
      // or a rolled-back system's paths may be collected by the target's GC again.
      if (!(verifyCleansUp && succeeded)) await this.releaseGcRoot()
    }
  }

  /**
   * The target must now run (and boot) the new system as the mode says; then old generations go.
   * The state is read in the deploy's last command on the target (wrapUp), which also removes the
   * agent's directory and the GC root, and releases the lock unless pruning still needs it: each
   * was a round trip of its own, after the outcome was already known.
   */
  private async verify(before: RemoteState): Promise<void> {
    const { target, job, agent } = this
    const prunes = job.keepGenerations !== undefined && job.goal.setsProfile
    const releasing = prunes || this.held?.lost ? undefined : this.held
    releasing?.stopRenewing()
    // The plan's deployed record first, under the lock: the activation succeeded. (A verify that
    // then fails keeps it: what the machine runs is for rollback-fleet to judge.)
    const record = this.recordToWrite('deployed', before)
    this.deployedRecordSent = record
    const agentDir = agent.leaveDir && agent.finished ? agent.session?.dir : undefined
    const wrapped = await target.wrapUp({
      agentDir,
      gcRoot: this.gcRootPlaced ? this.gcRoot : undefined,
      lock: releasing?.request,
      record
    })
    if (agentDir) agent.dirLeft = false
    this.gcRootPlaced = false
    // Not released (another run took it over meanwhile, or the link failed): cleanUp tries again.
    if (wrapped.lockReleased) this.held = undefined
    // Not written: recordFailure tries the deployed record again while the lock is still held.
    if (wrapped.record instanceof ActionError) throw wrapped.record
    this.deployedRecordSent = undefined
    if (record && wrapped.record) this.wroteRecord(record.record, wrapped.record)
    const after = wrapped.state
    const problems = verifyProblems(job.goal, after, job.built.toplevel)
    if (problems.length > 0)
      throw new ActionError(
        `switch-to-configuration ${job.goal.mode} succeeded, but ${target.label} did not take ${job.built.toplevel}: ${problems.join(', ')}`,
        "Check the activation output; the configuration's activation may not manage /run/current-system as NixOS does.",
        'verify'
      )
    this.result.changed = changedBy(job.goal, before, after, job.built.toplevel)
    this.result.result = job.goal.mode === 'dry-activate' ? 'dry-activated' : 'deployed'
    if (job.keepGenerations !== undefined && job.goal.setsProfile)
      this.result.deletedGenerations = await pruneGenerations(
        target,
        job.keepGenerations,
        generationOf(after.profileLink)
      )
  }

  private async releaseGcRoot(): Promise<void> {
    if (!this.gcRootPlaced) return
    this.gcRootPlaced = false
    await this.target.store.removeGcRoot(this.gcRoot)
  }

  /** Always, success or not: the GC root gone, the lock released (unless the agent keeps it). */
  async cleanUp(): Promise<void> {
    await this.releaseGcRoot()
    // Its finished agent waits for the directory to go (holding the lock) when the last command
    // that removes it failed: removed here, best effort, before the lock is released.
    const { dirLeft, session: left } = this.agent
    if (dirLeft && left) {
      this.agent.dirLeft = false
      await left.remove()
    }
    if (this.held) {
      // An agent that may still roll back keeps the lock (it renews it) until its final state.
      const { started, finished, session } = this.agent
      if (!started || finished || (session !== undefined && (await session.abandon())))
        await this.held.release()
      else this.held.stopRenewing()
    }
    this.target.close()
  }
}

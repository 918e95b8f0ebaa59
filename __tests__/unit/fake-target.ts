/**
 * A Target in memory, for unit tests of the deploy sequence (src/deploy) without root or a
 * testbed. It keeps what a NixOS target has (running system, profile and its generations, store
 * paths, the deploy lock, uploaded keys) and runs a simulated activation agent whose behaviour per
 * system is set by the test. Every call is recorded in `calls`, in order.
 */
import { formatPlanRecord, parsePlanRecord, PlanRecord } from '../../src/target/plan-record'
import { Readable } from 'stream'
import { DeployJob } from '../../src/deploy/deploy'
import { DeployMode, goalOf } from '../../src/deploy/goal'
import { ActionError } from '../../src/errors'
import { PathInfo } from '../../src/nix/closure'
import { Log } from '../../src/log/untrusted'
import { LockRequest, LockVerb } from '../../src/target/lock/on-target'
import { RemoteState } from '../../src/target/remote-state'
import { AgentState } from '../../src/target/agent/outcome'
import { AgentPoll, AgentRequest, AgentSession, AgentStartUnanswered } from '../../src/target/agent/session'
import {
  BootTrialAnswer,
  BootTrialRecord,
  BootTrialStep,
  CopyPlan,
  GenerationListing,
  ImportResult,
  KeyFile,
  RebootScheduled,
  Survey,
  SurveyRequest,
  Target,
  SystemProfile,
  TargetBoot,
  TargetStore,
  WrapUpRequest,
  WrapUpResult
} from '../../src/target/target'

/** How a system behaves when the simulated agent activates it. */
/** late-decision: every decision reaches the agent after its window (a link down, then back). */
/** boot-entry-fails: its boot entry cannot be installed (a full /boot) once it is confirmed. */
export type Behaviour = 'ok' | 'fails' | 'breaks-ssh' | 'agent-killed' | 'late-decision' | 'boot-entry-fails'

export const storePath = (name: string, c = 'a'): string => `/nix/store/${c.repeat(32)}-${name}`

export class MemoryLog implements Log {
  readonly prefix = ''
  lines: string[] = []
  readonly warnings: string[] = []
  info(m: string): void {
    this.lines.push(m)
  }
  warning(m: string): void {
    this.lines.push(`warning: ${m}`)
    this.warnings.push(m)
  }
  untrusted(t: string): void {
    this.lines.push(`untrusted: ${t}`)
  }
  async group<T>(title: string, fn: () => Promise<T>): Promise<T> {
    this.lines.push(`group: ${title}`)
    return fn()
  }
}

interface Agent {
  req: AgentRequest
  state: AgentState
  log: string
  decision?: 'confirm' | 'abort'
  abandoned: boolean
}

export class FakeTarget implements Target {
  readonly label = 'target root@pi'
  readonly log = new MemoryLog()
  calls: string[] = []
  current: string
  generations: string[] = []
  profileGen: number
  /** The store paths it has. */
  paths = new Set<string>()
  keys = new Map<string, KeyFile>()
  lockOwner: string | undefined
  /** Polls for which another run still holds the lock (then it is released). */
  heldForPolls = 0
  behaviour = new Map<string, Behaviour>()
  failingChecks = new Set<string>()
  /** Reconnects that fail (ActionError) before one succeeds. */
  failedReconnects = 0
  /** The agent starts, and the answer to its start is lost (the link down until the retries end). */
  startAnswerLost = false
  /** From this follow poll on (1-based), the target cannot be reached. */
  unreachableFromPoll: number | undefined
  refusedKeyDirs = new Set<string>()
  /** wrapUp cannot write the deploy plan record (a full disk, say): it says so, and does the rest. */
  planRecordWriteFails = false
  /** Runs as wrapUp begins (another run taking the lock over, say). */
  onWrapUp: (() => void) | undefined
  /** The link fails during wrapUp: before the target did anything, or after it wrote the record. */
  wrapUpLinkFails: 'before' | 'after-record' | undefined
  /** The link fails on this many lock releases to come (a deploy's cleanUp on a link still down). */
  lockReleaseLinkFails = 0
  /** /boot: free bytes and the files in it (undefined: no /boot). */
  bootFreeBytes: number | undefined
  bootFiles: string[] = []
  /** What it booted (/run/booted-system's kernel…); undefined: no such link. */
  booted: RemoteState['booted']
  bootId = 'boot-1'
  /** Reboots asked for; a reboot boots the profile's system (or `bootsInto`, a broken boot loader). */
  reboots = 0
  bootsInto: string | undefined
  /**
   * The boot trial of the last reboot, while it waits. `trialUnreachable`: the new system boots
   * but cannot be reached, so its trial expires and it goes back at once (two boots);
   * `trialExpired`: a confirmation finds the trial already over.
   */
  trial: BootTrialRecord | undefined
  trialUnreachable = false
  trialExpired = false
  /** A rejection that a reboot beats: the new system boots once more, and its trial goes back from there. */
  trialCutOnReject = false
  private goesBackAtNextLook = false
  /** With a one-shot boot (`once`): the new system panics, so the reset boots the previous one. */
  panicsOnce = false
  /** The boot loader's one-shot file readState reports (RemoteState.bootOnce). */
  bootOnce: string | undefined
  /** Its deploy-plan record (writePlanRecord), as readState returns it. */
  planRecord: PlanRecord | undefined
  trialVerdicts: string[] = []
  /** Reconnects that fail while it reboots, before it answers again. */
  downForReconnects = 0
  agents = new Map<string, Agent>()
  polls = 0

  constructor(running: string, closure: string[] = [running]) {
    this.current = running
    this.generations = [running]
    this.profileGen = 1
    for (const p of closure) this.paths.add(p)
  }

  get profile(): string {
    return this.generations[this.profileGen - 1]
  }

  state(): RemoteState {
    return {
      current: this.current,
      profile: this.profile,
      profileLink: `system-${this.profileGen}-link`,
      bootFiles: this.bootFiles,
      bootFreeBytes: this.bootFreeBytes,
      booted: this.booted,
      bootId: this.bootId,
      platform: 'aarch64-linux',
      uid: 0,
      hasNixStore: true,
      nixFreeBytes: 10e9,
      trial: this.trial && {
        stage: 'pending',
        system: this.trial.system,
        previous: this.trial.previous,
        previousGeneration: this.trial.previousGeneration,
        confirmSeconds: this.trial.confirmSeconds,
        loginSeconds: this.trial.loginSeconds
      },
      bootOnce: this.bootOnce,
      planRecord: this.planRecord
    }
  }

  /** As the target keeps it: the record's text, read back as probe.sh prints it. */
  async writePlanRecord(record: PlanRecord, lock: LockRequest): Promise<'written' | 'not-held'> {
    const wrote = this.putPlanRecord(record, lock)
    this.calls.push(`writePlanRecord ${record.state}${wrote === 'not-held' ? ' (not held)' : ''}`)
    return wrote
  }

  /** As record.sh: only while the lock is `lock`'s; read back as probe.sh prints it. */
  private putPlanRecord(record: PlanRecord, lock: LockRequest): 'written' | 'not-held' {
    if (this.lockOwner !== lock.id) return 'not-held'
    const lines = formatPlanRecord(record).split('\n').filter(Boolean)
    this.planRecord = parsePlanRecord(
      new Map(lines.map(l => [`plan-${l.slice(0, l.indexOf('='))}`, l.slice(l.indexOf('=') + 1)]))
    )
    return 'written'
  }

  async checkSudo(): Promise<void> {
    this.calls.push('checkSudo')
  }

  async survey(req: SurveyRequest): Promise<Survey> {
    this.calls.push('survey')
    if (req.lock) {
      if (this.heldForPolls > 0) {
        this.heldForPolls--
        return { kind: 'held', holder: { id: 'other', secondsLeft: 60, description: 'another run' } }
      }
      if (this.lockOwner && this.lockOwner !== req.lock.id)
        return { kind: 'held', holder: { id: this.lockOwner, secondsLeft: 60, description: 'another run' } }
      this.lockOwner = req.lock.id
    }
    const s = this.state()
    const top = req.toplevel
    const unchanged =
      (req.unchangedWhen === 'switch' && s.current === top && s.profile === top) ||
      (req.unchangedWhen === 'boot' && s.profile === top) ||
      (req.unchangedWhen === 'test' && s.current === top)
    if (unchanged) {
      const release = req.lock !== undefined && req.releaseIfUnchanged
      if (release) this.lockOwner = undefined
      return { kind: 'unchanged', state: s, lockReleased: release }
    }
    const missing = req.closure.filter(p => !this.paths.has(p.path))
    return {
      kind: 'changed',
      state: s,
      copy: { toCopy: missing, targetCodecs: new Set(['zstd']) },
      running: { entries: [{ path: this.current, narSize: 1000 }] }
    }
  }

  async lock(verb: LockVerb, req: LockRequest): Promise<string> {
    this.calls.push(`lock ${verb}`)
    if (verb === 'release') {
      if (this.lockReleaseLinkFails > 0) {
        this.lockReleaseLinkFails--
        throw new ActionError(`lost the SSH connection to ${this.label}`, '', 'connect')
      }
      if (this.lockOwner !== req.id) return 'not-held'
      this.lockOwner = undefined
      return 'released'
    }
    if (verb === 'renew') return this.lockOwner === req.id ? 'renewed' : 'lost'
    if (this.lockOwner && this.lockOwner !== req.id) return 'held\nother\n60\nanother run'
    this.lockOwner = req.id
    return 'acquired'
  }

  async substitute(paths: string[]): Promise<Set<string>> {
    return new Set(paths)
  }

  readonly importsSignedOnly: boolean = false

  get store(): TargetStore {
    return {
      importsSignedOnly: this.importsSignedOnly,
      substitute: paths => this.substitute(paths),
      importStream: (codec, stream, check) => this.importStream(codec, stream, check),
      importSignedCache: () => this.importSignedCache(),
      queryMissing: paths => this.queryMissing(paths),
      removeGcRoot: () => this.removeGcRoot()
    }
  }

  get systemProfile(): SystemProfile {
    return {
      listGenerations: () => this.listGenerations(),
      deleteGenerations: numbers => this.deleteGenerations(numbers)
    }
  }

  get boot(): TargetBoot {
    return {
      reboot: trial => this.reboot(trial),
      settleTrial: step => this.settleBootTrial(step)
    }
  }

  importSignedCache(): Promise<ImportResult> {
    return Promise.reject(new Error('FakeTarget takes NAR streams only'))
  }

  async importStream(_codec: string, _s: Readable, check: string[]): Promise<ImportResult> {
    for (const p of check) this.paths.add(p)
    return { exitCode: 0, stderr: '', stillMissing: new Set() }
  }

  async queryMissing(paths: string[]): Promise<Set<string>> {
    return new Set(paths.filter(p => !this.paths.has(p)))
  }

  async uploadKey(k: KeyFile): Promise<void> {
    this.calls.push(`uploadKey ${k.name}`)
    if (this.refusedKeyDirs.has(k.destDir))
      throw new ActionError(
        `deployment.keys.${k.name}: refusing to write it on ${this.label}: unsafe`,
        '',
        'activate'
      )
    this.keys.set(`${k.destDir}/${k.name}`, k)
  }

  async startAgent(req: AgentRequest): Promise<AgentSession | 'lost-lock'> {
    this.calls.push(`startAgent ${req.action}`)
    if (req.lock && this.lockOwner !== req.lock.id) return 'lost-lock'
    const agent: Agent = { req, state: {}, log: '', abandoned: false }
    this.agents.set(req.dir, agent)
    if (req.rollbackOf) {
      // Another agent putting the target back after one died (agent.sh --rollback-of-generation).
      this.calls.push(`rollbackOf ${req.rollbackOf.generation ?? '-'} ${req.rollbackOf.createdNew}`)
      if (req.rollbackOf.generation !== undefined) this.rollback(agent)
      else if (req.before.current) this.current = req.before.current
      agent.state.outcome = 'rolled-back'
      return this.sessionOf(req.dir)
    }
    this.runAgent(agent)
    if (this.startAnswerLost)
      throw new AgentStartUnanswered(
        this.sessionOf(req.dir),
        this.label,
        new ActionError(
          `lost the SSH connection to ${this.label} while starting the activation agent`,
          '',
          'connect'
        )
      )
    return this.sessionOf(req.dir)
  }

  /** The session of the agent in `dir`: its verbs are the fake's, recorded as they are called. */
  private sessionOf(dir: string): AgentSession {
    return {
      dir,
      follow: offset => this.followAgent(dir, offset),
      decide: async (decision, follow) => {
        const answer = await this.decide(dir, decision)
        // With a look (decide.sh then follow.sh): what the decision brought, in the same command.
        return follow ? { answer, poll: this.look(dir, follow.offset) } : { answer }
      },
      abandon: () => this.abandonAgent(dir),
      remove: () => this.removeAgentDir(dir)
    }
  }

  /**
   * The agent's first part: set the profile, activate; a failure rolls back at once. A switch that
   * waits for a decision sets the profile only once confirmed (agent.sh's make_boot_default).
   */
  private runAgent(a: Agent): void {
    const { req } = a
    const setsProfile = (req.action === 'switch' && req.waitSeconds <= 0) || req.action === 'boot'
    const changesRunning = req.action === 'switch' || req.action === 'test'
    if (setsProfile) this.setProfile(a)
    const behaviour = this.behaviour.get(req.toplevel) ?? 'ok'
    a.log += `activating ${req.toplevel}\n`
    if (behaviour === 'agent-killed') {
      // Killed half-way: the profile set (unless it waited for the confirmation), the new system
      // running, no status and no outcome.
      if (changesRunning) this.current = req.toplevel
      a.state.agent = 'dead'
      return
    }
    if (behaviour === 'fails') {
      a.state.status = 1
      this.rollback(a)
      a.state.outcome = req.action === 'dry-activate' ? 'failed' : 'rolled-back'
      return
    }
    if (changesRunning) this.current = req.toplevel
    a.state.status = 0
    if (req.waitSeconds <= 0) a.state.outcome = 'done'
  }

  private setProfile(a: Agent): void {
    this.generations.push(a.req.toplevel)
    this.profileGen = this.generations.length
    a.state.generation = this.profileGen
    a.state.createdNew = true
  }

  private rollback(a: Agent): void {
    const { req } = a
    // The generation this agent made, or (a rollback-only agent) the dead one's.
    if ((a.state.generation ?? req.rollbackOf?.generation) !== undefined) {
      this.generations.pop()
      this.profileGen = Number(/system-(\d+)-link/.exec(req.before.profileLink ?? '')?.[1] ?? 1)
    }
    if (req.before.current) this.current = req.before.current
  }

  async followAgent(dir: string, offset: number): Promise<AgentPoll> {
    this.polls++
    if (this.unreachableFromPoll !== undefined && this.polls >= this.unreachableFromPoll)
      throw new ActionError(
        `lost the SSH connection to ${this.label} while following the activation log`,
        '',
        'connect'
      )
    return this.look(dir, offset)
  }

  /** One look at the agent (follow.sh's answer); the fake's agent acts on its decision first. */
  private look(dir: string, offset: number): AgentPoll {
    const a = this.agents.get(dir)!
    // A decision (or its absence: breaks-ssh) settles the wait.
    if (a.state.status === 0 && a.state.outcome === undefined && a.decision) {
      if (a.decision === 'confirm') {
        this.setProfile(a)
        if (this.behaviour.get(a.req.toplevel) === 'boot-entry-fails') {
          this.rollback(a)
          a.state.outcome = 'boot-entry-failed'
        } else a.state.outcome = 'confirmed'
      } else {
        this.rollback(a)
        a.state.outcome = 'rolled-back'
      }
    }
    const chunk = a.log.slice(offset)
    return { chunk, size: a.log.length, state: { ...a.state } }
  }

  async decide(dir: string, decision: 'confirm' | 'abort'): Promise<string> {
    this.calls.push(`decide ${decision}`)
    const a = this.agents.get(dir)!
    if (this.behaviour.get(a.req.toplevel) === 'late-decision') {
      // The agent's own timeout decided first, as its onTimeout says.
      if (a.req.onTimeout === 'keep') {
        this.setProfile(a)
        a.state.outcome = 'unconfirmed-kept'
      } else {
        this.rollback(a)
        a.state.outcome = 'rolled-back-unconfirmed'
      }
      return 'lost:timeout'
    }
    if (this.behaviour.get(a.req.toplevel) === 'breaks-ssh' && decision === 'confirm') {
      // The new system let nobody in: the agent's own timeout decides.
      a.decision = 'abort'
      return 'lost:timeout'
    }
    a.decision = decision
    return 'won'
  }

  async abandonAgent(dir: string): Promise<boolean> {
    this.calls.push('abandonAgent')
    const a = this.agents.get(dir)
    if (a) a.abandoned = true
    return a?.state.outcome !== undefined
  }

  async removeAgentDir(dir: string): Promise<void> {
    this.calls.push('removeAgentDir')
    this.agents.delete(dir)
  }

  async runHealthCheck(check: string): Promise<{ exitCode: number; output: string }> {
    this.calls.push(`healthCheck ${check}`)
    return this.failingChecks.has(check)
      ? { exitCode: 1, output: 'check failed' }
      : { exitCode: 0, output: '' }
  }

  async readState(): Promise<RemoteState> {
    const now = this.state()
    if (this.goesBackAtNextLook) {
      this.goesBackAtNextLook = false
      this.goBack()
    }
    return now
  }

  async wrapUp(req: WrapUpRequest): Promise<WrapUpResult> {
    const parts = [
      req.record && `plan record ${req.record.record.state}`,
      req.agentDir && 'agent dir',
      req.gcRoot && 'GC root',
      req.lock && 'lock'
    ].filter(Boolean)
    this.calls.push(`wrapUp ${parts.join(', ')}`)
    this.onWrapUp?.()
    const linkLost = () =>
      new ActionError(
        `lost the SSH connection to ${this.label} while reading the system state`,
        '',
        'connect'
      )
    if (this.wrapUpLinkFails === 'before') {
      this.wrapUpLinkFails = undefined
      throw linkLost()
    }
    // As wrap-up.sh: the record first (its own failure leaves the rest to do), the lock released last.
    const record = !req.record
      ? undefined
      : this.planRecordWriteFails
        ? new ActionError(
            `writing the deploy plan record on ${this.label} failed: No space left on device`,
            'Free space.',
            'activate'
          )
        : this.putPlanRecord(req.record.record, req.record.lock)
    if (this.wrapUpLinkFails === 'after-record') {
      this.wrapUpLinkFails = undefined
      throw linkLost()
    }
    if (req.agentDir) this.agents.delete(req.agentDir)
    const state = this.state()
    const lockReleased = req.lock !== undefined && this.lockOwner === req.lock.id
    if (lockReleased) this.lockOwner = undefined
    return { state, lockReleased, ...(record ? { record } : {}) }
  }

  async listGenerations(): Promise<GenerationListing> {
    return {
      generations: this.generations.map((path, i) => ({ number: i + 1, path })),
      running: this.current,
      booted: this.profile
    }
  }

  async deleteGenerations(numbers: number[]): Promise<string | undefined> {
    this.calls.push(`deleteGenerations ${numbers.join(',')}`)
    return undefined
  }

  async removeGcRoot(): Promise<void> {
    this.calls.push('removeGcRoot')
  }

  async reboot(trial?: BootTrialRecord): Promise<RebootScheduled> {
    this.calls.push(trial ? 'reboot on trial' : 'reboot')
    this.reboots++
    const system = this.bootsInto ?? this.profile
    this.current = system
    this.booted = { system }
    this.bootId = `boot-${this.reboots + 1}`
    this.trial = trial
    if (trial?.once !== undefined && this.panicsOnce) {
      // Booted once, panicked, reset: the default (the previous system) booted, the record pending.
      this.current = trial.previous
      this.booted = { system: trial.previous }
      this.bootId = `boot-${this.reboots + 1}-fallback`
      return { once: { ok: true } }
    }
    if (trial && this.trialUnreachable) this.goBack()
    return trial?.once !== undefined ? { once: { ok: true } } : {}
  }

  async settleBootTrial(step: BootTrialStep): Promise<BootTrialAnswer> {
    this.calls.push(`settleBootTrial ${step}`)
    this.trialVerdicts.push(step)
    if (step === 'fell-back') {
      const fell = this.trial?.once !== undefined && this.booted?.system !== this.trial.system
      this.trial = undefined
      return fell ? 'fell-back' : 'none'
    }
    if (step === 'check-in') return this.trial ? 'reached' : 'expired'
    if (step === 'reject' && this.trial && this.trialCutOnReject) {
      this.reboots++
      this.bootId = `boot-${this.reboots + 1}-again`
      this.goesBackAtNextLook = true
      return 'rejected'
    }
    if (!this.trial || this.trialExpired || step === 'reject') {
      const expired = !this.trial || this.trialExpired
      this.goBack()
      return expired ? 'expired' : 'rejected'
    }
    this.trial = undefined
    return 'confirmed'
  }

  /** What the target's boot trial does when it gives up: the previous profile, a boot into it. */
  private goBack(): void {
    if (!this.trial) return
    const previous = this.trial.previous
    const gen = this.trial.previousGeneration
    if (gen !== undefined && this.generations[gen - 1] === previous) this.profileGen = gen
    else this.profileGen = this.generations.push(previous)
    this.reboots++
    this.current = previous
    this.booted = { system: previous }
    this.bootId = `boot-${this.reboots + 1}`
    this.trial = undefined
  }

  async reconnect(): Promise<void> {
    this.calls.push('reconnect')
    if (this.downForReconnects > 0) {
      this.downForReconnects--
      throw new ActionError(`cannot reach ${this.label}: it is rebooting`, '', 'connect')
    }
    if (this.failedReconnects > 0) {
      this.failedReconnects--
      throw new ActionError(`cannot reach ${this.label}`, '', 'connect')
    }
  }

  /** How long dialling the confirmation's new connection takes (ms). */
  confirmDialMs = 0

  /** The confirmation's new connection: a reconnect as far as these tests are concerned. */
  async reconnectToConfirm(): Promise<void> {
    if (this.confirmDialMs > 0) await new Promise(r => setTimeout(r, this.confirmDialMs))
    return this.reconnect()
  }

  close(): void {
    this.calls.push('close')
  }
}

/** A closure: the system and one package, with sizes. */
export function closureOf(top: string, pkg = storePath('hello-2.12', 'h')): PathInfo[] {
  return [
    { path: pkg, narSize: 100, references: [] },
    { path: top, narSize: 300, references: [pkg] }
  ]
}

/** A copy that records what it was asked to copy and puts it into the fake's store. */
export function fakeCopy(copied: string[][]) {
  return {
    fetchFromCache: async () => {},
    copy: async (target: Target, plan: CopyPlan) => {
      copied.push(plan.toCopy.map(p => p.path))
      if (plan.toCopy.length > 0)
        await target.store.importStream(
          'zstd',
          Readable.from([]),
          plan.toCopy.map(p => p.path),
          1000
        )
      return {
        copiedPaths: plan.toCopy.map(p => p.path),
        narBytes: plan.toCopy.reduce((a, p) => a + p.narSize, 0),
        wireBytes: 1,
        codec: 'zstd' as const
      }
    }
  }
}

/** A deploy job of `toplevel` for a FakeTarget (magic rollback for switch and test, as the defaults). */
export function fakeJob(
  toplevel: string,
  mode: DeployMode = 'switch',
  extra: Partial<DeployJob> = {}
): DeployJob {
  return {
    name: '',
    goal: goalOf(mode),
    built: { toplevel, hostSystem: 'aarch64-linux', closure: closureOf(toplevel) },
    keys: [],
    activation: {
      activationTimeoutSeconds: 30,
      confirmTimeoutSeconds: 30,
      healthTimeoutSeconds: 5,
      connectTimeoutSeconds: 5,
      magicRollback: mode === 'switch' || mode === 'test',
      healthChecks: []
    },
    lockTimeoutSeconds: 30,
    compression: 'auto',
    substituteOnDestination: false,
    ...extra
  }
}

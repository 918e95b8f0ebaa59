import { Readable } from 'stream'
import { PathInfo } from '../nix/closure'
import { ClosureEntry } from '../report/diff'
import { ActionError } from '../errors'
import { Log } from '../log/untrusted'
import { LockHolder, LockRequest, LockVerb } from './lock/on-target'
import { RemoteState } from './remote-state'
import type { PlanRecord } from './plan-record'
import { AgentRequest, AgentSession } from './agent/session'
import type { BinaryCache } from '../nix/deploy-plan'
export type { BinaryCache } from '../nix/deploy-plan'

/** What a deploy's last command does on the target (Target.wrapUp): each part only when given. */
export interface WrapUpRequest {
  agentDir?: string
  gcRoot?: string
  lock?: LockRequest
  /** A deploy plan's record written first, while `lock` of its own holds the deploy lock (as writePlanRecord). */
  record?: { record: PlanRecord; lock: LockRequest }
}

/** What a deploy's last command found and did (Target.wrapUp). */
export interface WrapUpResult {
  state: RemoteState
  lockReleased: boolean
  /** The record's fate, when one was given; an error when it could not be written. */
  record?: 'written' | 'not-held' | ActionError
}

/**
 * A machine the action deploys to, as the deploy sequence sees it: a narrow set of verbs (after
 * colmena's `Host`). SshTarget does them over SSH with the scripts in ./scripts; the unit tests'
 * FakeTarget does them in memory, so every branch of src/deploy runs without root or a testbed.
 * Every verb that fails in a way the user can act on throws an ActionError saying what to do.
 */
export interface Target {
  /** "target user@host:port", for messages. */
  readonly label: string
  /** Where this machine's deploy logs (prefixed with its name when several deploy at once). */
  readonly log: Log

  /** With sudo: fails at once when sudo -n does not work for `user`. */
  checkSudo(user: string): Promise<void>
  /** The lock first, then under it the state, whether it is unchanged, what to copy, and what it runs. */
  survey(req: SurveyRequest): Promise<Survey>
  /** One operation on the deploy lock; the script's answer (see lock.sh). */
  lock(verb: LockVerb, req: LockRequest): Promise<string>
  /** Its Nix store, as a copy uses it (src/deploy/copy.ts). */
  readonly store: TargetStore
  /** Writes one deployment key (see upload-key.sh for what is refused). */
  uploadKey(key: KeyFile): Promise<void>
  /**
   * Writes and starts the activation agent (src/target/scripts/agent.sh), detached; its session
   * (follow, decide, abandon, remove), or 'lost-lock' when this run no longer holds the lock.
   */
  startAgent(req: AgentRequest): Promise<AgentSession | 'lost-lock'>
  /** Runs one health check (shell, as written) with a time limit, retrying the link until `deadline`. */
  runHealthCheck(
    check: string,
    deadline: number,
    timeoutMs: number
  ): Promise<{ exitCode: number; output: string }>
  /** What runs and what the profile holds now. */
  readState(): Promise<RemoteState>
  /**
   * A deploy's last command once its activation has an outcome (one round trip for what were
   * five): writes the deploy plan's record, removes the agent's directory and the run's GC root
   * (each when given), reads the state to verify, and releases the deploy lock last (when given).
   * See wrap-up.sh.
   */
  wrapUp(req: WrapUpRequest): Promise<WrapUpResult>
  /**
   * Replaces its deploy-plan record (src/target/plan-record.ts), which readState then returns, only
   * while `lock` holds its deploy lock (else "not-held", nothing written).
   */
  writePlanRecord(record: PlanRecord, lock: LockRequest, timeoutMs?: number): Promise<'written' | 'not-held'>
  /** The system profile's generations. */
  readonly systemProfile: SystemProfile
  /** Its reboot into the new system, and the deploy's steps in the boot trial that follows. */
  readonly boot: TargetBoot
  /** Drops the connection and dials a new one (both hops): a target that rebooted, a lost link. */
  reconnect(): Promise<void>
  /**
   * Replaces the connection with a new one to the target (a new TCP connection from the jump host,
   * a new SSH login; the jump host's connection kept while it is up): proof the target still lets us in.
   */
  reconnectToConfirm(): Promise<void>
  close(): void
}

/** The target's Nix store: what it lacks, and the ways paths get into it. */
export interface TargetStore {
  /**
   * Lets the target fetch `paths` from its own substituters, and from `cache` too when given (a
   * deploy plan's binary cache, trusted for its key); returns those still missing.
   */
  substitute(paths: string[], cache: BinaryCache | undefined, timeoutMs: number): Promise<Set<string>>
  /** Imports a NAR stream compressed with `codec`; returns which of `check` are still missing. */
  importStream(codec: string, stream: Readable, check: string[], timeoutMs: number): Promise<ImportResult>
  /**
   * True for a deploy user's gate (nixos/deploy-user.nix): it imports only store paths signed by a
   * key it trusts, from a binary cache (importSignedCache), never a NAR stream.
   */
  readonly importsSignedOnly: boolean
  /** Imports a tar of a signed binary cache; returns which of `check` are still missing. */
  importSignedCache(stream: Readable, check: string[], timeoutMs: number): Promise<ImportResult>
  /** Which of `paths` the target's store lacks. */
  queryMissing(paths: string[]): Promise<Set<string>>
  /** Removes a GC root this run made (never fails: a root left behind only delays a GC). */
  removeGcRoot(link: string): Promise<void>
}

/** The system profile's generations (what keep-generations prunes). */
export interface SystemProfile {
  listGenerations(): Promise<GenerationListing>
  /** Deletes system generations; the error text when nix-env refused. */
  deleteGenerations(numbers: number[]): Promise<string | undefined>
}

/** A reboot, and the boot trial after it (nixos/boot-trial.nix). */
export interface TargetBoot {
  /**
   * Schedules a reboot a moment after it returns (detached: the session ends first); with `trial`,
   * in the same command, the record the target's boot trial reads in the next boot.
   */
  reboot(trial?: BootTrialRecord): Promise<RebootScheduled>
  /**
   * The deploy's step in a boot trial (see target/scripts/boot-trial-steps.sh): its check-in after the
   * boot ('reached'), its verdict ('confirmed', 'rejected'); 'expired' when the target's trial had
   * already given up, 'none' when no trial is pending there.
   */
  settleTrial(step: BootTrialStep): Promise<BootTrialAnswer>
}

/**
 * What the target's boot trial (nixos/boot-trial.sh) needs: the system booted on trial, the one to
 * go back to (with its generation, when the profile still has it) and its windows.
 */
export interface BootTrialRecord {
  system: string
  previous: string
  previousGeneration?: number
  /** The second window: from the deploy's check-in to its confirmation (the first, protocol 1). */
  confirmSeconds: number
  /** Protocol 2: the first window, from the trial's start to the deploy's check-in (reboot-timeout). */
  loginSeconds?: number
  /** This run's deploy lock, held through the boot while the trial is pending (lock.sh). */
  lock?: LockRequest
  /** How long into the next boot the lock may be held so (uptime seconds): the trial's whole wait. */
  lockWindowSeconds?: number
  /**
   * The boot loader's one-shot file (RemoteState.bootOnce): the new system is booted once while
   * the previous one stays the default until the confirmation (target/scripts/reboot.sh).
   */
  once?: string
}

/** What the reboot command did besides scheduling the reboot. */
export interface RebootScheduled {
  /** The new system is a one-shot entry (with `once`); else why that failed (it is the default). */
  once?: { ok: true } | { ok: false; why: string }
}

export type BootTrialStep = 'check-in' | 'confirm' | 'reject' | 'fell-back'
/**
 * 'not-default': confirmed, but the new system booted once could not be made the default.
 * 'fell-back' / 'not-run': the target booted the previous system instead of a one-shot entry,
 * which the boot loader ran (emptied its file) or not (see target/scripts/boot-trial-steps.sh).
 */
export type BootTrialAnswer =
  | 'reached'
  | 'confirmed'
  | 'not-default'
  | 'rejected'
  | 'expired'
  | 'none'
  | 'fell-back'
  | 'not-run'

/** When a target counts as already running the new system (per mode); 'never' for dry runs. */
export type UnchangedWhen = 'switch' | 'boot' | 'test' | 'never'

export interface SurveyRequest {
  toplevel: string
  closure: PathInfo[]
  /**
   * The binary cache the target fetches the system from next (a deploy plan's): the target lists
   * the closure itself, from there, instead of being sent its paths (survey.sh with CACHE; a
   * deploy user's gate lists it as its user, nixos/deploy-user/gate.sh).
   */
  closureFrom?: string
  gcRoot: string
  unchangedWhen: UnchangedWhen
  /** Release the lock in the same command when the target is unchanged (no keys to upload under it). */
  releaseIfUnchanged: boolean
  lock?: LockRequest
}

export interface CopyPlan {
  /** The closure's paths the target lacks, dependencies first. */
  toCopy: PathInfo[]
  /** Decompressors the target has. */
  targetCodecs: Set<string>
  /**
   * The target listed the closure itself from the deploy plan's cache (survey.sh with CACHE): the
   * cache answered it, so asked for the system alone it fetches the rest with it.
   */
  listedFromCache?: boolean
  /**
   * The deploy plan's cache did not answer the target's listing (refused, down, stalled): it is
   * not asked to fetch from it (Nix would wait on it for each path in turn).
   */
  cacheUnanswered?: boolean
}

/** What the survey found: the lock held by another run, or the state under this run's lock. */
export type Survey =
  | { kind: 'held'; holder: LockHolder }
  | { kind: 'unchanged'; state: RemoteState; lockReleased: boolean }
  | {
      kind: 'changed'
      state: RemoteState
      /** What to copy, or why the target could not say (raised after the state checks). */
      copy: CopyPlan | Error
      /** What it runs, for the package diff (put together from what differs from the new closure). */
      running: RunningClosure
    }

/** The running system's closure for the package diff, or why it could not be listed. */
export type RunningClosure = { entries: ClosureEntry[] } | { error: string }

export interface ImportResult {
  exitCode: number
  stderr: string
  /** Of the paths asked about, those still missing after the import. */
  stillMissing: Set<string>
}

/** A deployment key as the target gets it. */
export interface KeyFile {
  name: string
  destDir: string
  user: string
  group: string
  permissions: string
  content: string
}

/** One system generation: its number (system-N-link) and the system it holds. */
export interface GenerationInfo {
  number: number
  path: string
}

export interface GenerationListing {
  generations: GenerationInfo[]
  running?: string
  booted?: string
}

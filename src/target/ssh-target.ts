import * as core from '@actions/core'
import { Readable } from 'stream'
import { ActionError, errorMessage } from '../errors'
import { topoSort } from '../nix/closure'
import { assertStorePath } from '../nix/store-path'
import { Log } from '../log/untrusted'
import { ExecOptions, RemoteHost, RemoteResult } from '../ssh/connection'
import { shellCommand } from '../ssh/quote'
import { LockRequest, LockVerb, lockArgs } from './lock/on-target'
import { isScriptMissing, keepScriptsCommand, KEPT_SCRIPTS_DIR, keptRunCommand } from './kept-scripts'
import { parseGenerations, parseMissing } from './parse'
import { parseRemoteState, RemoteState } from './remote-state'
import { formatPlanRecord, PlanRecord } from './plan-record'
import {
  ABANDON_SCRIPT,
  BOOT_TRIAL_SCRIPT,
  DECIDE_SCRIPT,
  FOLLOW_SCRIPT,
  IMPORT_SCRIPT,
  LIST_GENERATIONS_SCRIPT,
  LOCK_SCRIPT,
  PLAN_RECORD_SCRIPT,
  PROBE_SCRIPT,
  QUERY_MISSING_SCRIPT,
  REBOOT_SCRIPT,
  PLACE_AND_START_AGENT_SCRIPT,
  SUBSTITUTE_SCRIPT,
  SURVEY_SCRIPT,
  UPLOAD_KEY_SCRIPT,
  WRAP_UP_SCRIPT,
  partsOf,
  ScriptFile
} from './scripts'
import { startAgentOverSsh, VerbWire } from './agent/over-ssh'
import { AgentRequest, AgentSession } from './agent/session'
import { GATE_COMMAND, gateCommand, gateMismatch, GateVerb, parseGateVersion } from './gate'
import { TargetSession } from './session'
import { closureByReference, parseSurvey, readByReference } from './survey'
import {
  BinaryCache,
  BootTrialAnswer,
  BootTrialRecord,
  BootTrialStep,
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
} from './target'

const STEP_TIMEOUT_MS = 120_000
/** upload-key.sh's exit status when destDir is not safe to write a secret into. */
const UNSAFE_DEST_DIR = 10
/** survey.sh removes other runs' GC roots older than this (no deploy takes that long). */
export const GC_ROOT_MAX_AGE_MINUTES = 24 * 60

/** The script each verb runs on a target that takes shell commands (a gate runs its own copies). */
export const SCRIPT_OF: Partial<Record<GateVerb, string>> = {
  survey: SURVEY_SCRIPT,
  lock: LOCK_SCRIPT,
  substitute: SUBSTITUTE_SCRIPT,
  import: IMPORT_SCRIPT,
  'query-missing': QUERY_MISSING_SCRIPT,
  'upload-key': UPLOAD_KEY_SCRIPT,
  'start-agent': PLACE_AND_START_AGENT_SCRIPT,
  follow: FOLLOW_SCRIPT,
  decide: DECIDE_SCRIPT,
  abandon: ABANDON_SCRIPT,
  probe: PROBE_SCRIPT,
  'wrap-up': WRAP_UP_SCRIPT,
  'list-generations': LIST_GENERATIONS_SCRIPT,
  reboot: REBOOT_SCRIPT,
  'boot-trial': BOOT_TRIAL_SCRIPT,
  'plan-record': PLAN_RECORD_SCRIPT
}

/** How long a boot trial's step is tried again over new connections (within its trial's windows). */
const BOOT_TRIAL_STEP_RETRY_MS = 90_000

/**
 * A target reached over SSH (see TargetSession): every verb is one of ./scripts, run remotely --
 * sent as `sh -c SCRIPT` to a login that takes commands (root, or sudo), or named to a deploy
 * user's gate (nixos/deploy-user.nix), which runs its own copies and checks every value.
 */
export class SshTarget implements Target {
  /** 'no' once the target showed it cannot keep the scripts (kept-scripts.ts): each command carries its own. */
  private keptState: 'unknown' | 'no' = 'unknown'
  /** The writing of the kept scripts under way, and how many were started. */
  private keeping: Promise<'kept' | 'cannot' | 'failed'> | undefined
  private keepings = 0

  constructor(
    private readonly session: TargetSession,
    /** Set when the login is a deploy user's gate (see gate.ts). */
    readonly gated = false,
    /**
     * Whether this visit may write the kept scripts (a deploy that changes the target); a dry run,
     * the report job and a rollback-fleet visit use those there and send the rest with their commands.
     */
    private readonly writesKeptScripts = false
  ) {}

  static async connect(
    dial: () => Promise<RemoteHost>,
    log: Log,
    opts: { writesKeptScripts?: boolean } = {}
  ): Promise<SshTarget> {
    const first = await dial()
    const session = new TargetSession(first, dial, log)
    try {
      // A deploy user's gate is never root's login: root's deploys skip the question.
      return new SshTarget(
        session,
        first.target.user !== 'root' && (await isGate(session)),
        opts.writesKeptScripts ?? false
      )
    } catch (e) {
      session.close()
      throw e
    }
  }

  /** What the agent's session runs its verbs through (./agent/over-ssh.ts). */
  private get wire(): VerbWire {
    return {
      label: this.label,
      log: this.log,
      gated: this.gated,
      run: (verb, args, opts) => this.run(verb, args, opts),
      runRetrying: (verb, args, opts) => this.runRetrying(verb, args, opts)
    }
  }

  /** Target.store: the store verbs below, each one script. */
  get store(): TargetStore {
    return {
      importsSignedOnly: this.gated,
      substitute: (paths, cache, timeoutMs) => this.substitute(paths, cache, timeoutMs),
      importStream: (codec, stream, check, timeoutMs) => this.importStream(codec, stream, check, timeoutMs),
      importSignedCache: (stream, check, timeoutMs) => this.importSignedCache(stream, check, timeoutMs),
      queryMissing: paths => this.queryMissing(paths),
      removeGcRoot: link => this.removeGcRoot(link)
    }
  }

  /** Target.systemProfile: listing and deleting generations, each one script. */
  get systemProfile(): SystemProfile {
    return {
      listGenerations: () => this.listGenerations(),
      deleteGenerations: numbers => this.deleteGenerations(numbers)
    }
  }

  /** Target.boot: the reboot and the boot trial's steps. */
  get boot(): TargetBoot {
    return {
      reboot: trial => this.reboot(trial),
      settleTrial: step => this.settleBootTrial(step)
    }
  }

  /** The command line of one verb, for this login. */
  private command(verb: GateVerb, args: string[], shell?: string[]): string {
    if (this.gated) return gateCommand(verb, args)
    if (shell) return shellCommand(shell)
    const script = SCRIPT_OF[verb]
    if (script === undefined) throw new Error(`no script for ${verb}`)
    return shellCommand(['sh', '-c', script, 'sh', ...args])
  }

  get label(): string {
    return this.session.label
  }

  get log(): Log {
    return this.session.log
  }

  /** One verb; `shell` is the command a login that takes commands runs for it instead of a script. */
  private run(
    verb: GateVerb,
    args: string[],
    opts: { stdin?: string | Readable; timeoutMs: number; what: string; shell?: string[] }
  ): Promise<RemoteResult> {
    const { shell, ...rest } = opts
    return this.send(verb, args, shell, rest, (command, o) => this.session.exec(command, o))
  }

  /** As run, reconnecting and running it again when the connection drops: idempotent scripts only. */
  private runRetrying(
    verb: GateVerb,
    args: string[],
    opts: { stdin?: string; timeoutMs: number; what: string; deadline?: number; shell?: string[] }
  ): Promise<RemoteResult> {
    const { deadline, shell, ...rest } = opts
    const until = deadline ?? Date.now() + opts.timeoutMs
    return this.send(verb, args, shell, rest, (command, o) => this.session.execRetrying(command, until, o))
  }

  /**
   * Sends one verb: by the hashes of its script's kept files where the target keeps them (and, the
   * first time, writes them there and sends it again: kept-run.sh ran nothing), else with its script.
   */
  private async send(
    verb: GateVerb,
    args: string[],
    shell: string[] | undefined,
    opts: ExecOptions,
    exec: (command: string, opts: ExecOptions) => Promise<RemoteResult>
  ): Promise<RemoteResult> {
    const execOpts = { ...opts, noSudo: this.gated }
    const kept = this.keptParts(verb, shell, opts.stdin)
    if (kept) {
      // With its stdin kept too, the command's own stdin is not read: none is sent.
      const keptOpts = kept.input ? { ...execOpts, stdin: undefined } : execOpts
      const command = keptRunCommand(kept.script, kept.input, args, this.writesKeptScripts)
      const r = await exec(command, keptOpts)
      if (!isScriptMissing(r)) return r
      const keeping = await this.keepScripts()
      if (keeping === 'kept') {
        const again = await exec(command, keptOpts)
        if (!isScriptMissing(again)) return again
        // Written, yet not found as written (no sha256sum?): every later command carries its script.
        this.log.info(`${this.label} does not run the scripts it keeps: each command carries its script`)
        this.keptState = 'no'
      }
    }
    return exec(this.command(verb, args, shell), execOpts)
  }

  /** The kept files of a verb's script (and of its stdin, when that is a script); undefined: send it. */
  private keptParts(
    verb: GateVerb,
    shell: string[] | undefined,
    stdin: ExecOptions['stdin']
  ): { script: readonly ScriptFile[]; input?: readonly ScriptFile[] } | undefined {
    // A gate runs its own copies; a stream (a copy) cannot be sent again after a miss.
    if (this.gated || shell || this.keptState === 'no' || (stdin !== undefined && typeof stdin !== 'string'))
      return undefined
    const script = SCRIPT_OF[verb]
    const parts = script === undefined ? undefined : partsOf(script)
    if (!parts) return undefined
    return { script: parts, input: stdin === undefined ? undefined : partsOf(stdin) }
  }

  /**
   * Writes the kept scripts on the target (shared by the commands that found them missing at once):
   * 'kept'; 'cannot' when this visit may not or the target could not (from then on each command
   * carries its script); 'failed' when the connection failed (this command carries its script).
   * At most twice per deploy.
   */
  private keepScripts(): Promise<'kept' | 'cannot' | 'failed'> {
    // Not this visit's to write, or written twice already (a target that loses them, or says so).
    if (!this.writesKeptScripts || this.keepings >= 2) {
      this.keptState = 'no'
      return Promise.resolve('cannot')
    }
    this.keeping ??= (async () => {
      this.keepings++
      try {
        const r = await this.session.exec(keepScriptsCommand(), {
          timeoutMs: STEP_TIMEOUT_MS,
          what: "keeping the action's scripts on the target"
        })
        if (r.exitCode === 0 && /^kept$/m.test(r.stdout)) {
          this.log.info(
            `Kept this release's scripts on ${this.label} (${KEPT_SCRIPTS_DIR}): later commands carry their hashes`
          )
          return 'kept'
        }
        this.log.info(
          `${this.label} cannot keep the action's scripts in ${KEPT_SCRIPTS_DIR} (exit ${r.exitCode}): each command carries its script`
        )
        this.keptState = 'no'
        return 'cannot'
      } catch (e) {
        // The connection: the command that asked is sent with its script (over a new one if need be).
        core.debug(`keeping the scripts on ${this.label}: ${errorMessage(e)}`)
        return 'failed'
      } finally {
        this.keeping = undefined
      }
    })()
    return this.keeping
  }

  async checkSudo(user: string): Promise<void> {
    // A gate has a sudo rule of its own (nda-root), which the deploy's first root step uses.
    if (this.gated) return
    const r = await this.session.exec('true', { timeoutMs: 30_000, what: 'checking sudo' })
    if (r.exitCode !== 0)
      throw new ActionError(
        /password|terminal|askpass/i.test(r.stderr)
          ? `sudo on the target asks ${user} for a password (sudo -n refuses to prompt)`
          : `sudo -n does not work for ${user} on the target: ${r.stderr.trim().slice(-300)}`,
        `Allow ${user} passwordless sudo on the target (NixOS: security.sudo.extraRules with NOPASSWD, or security.sudo.wheelNeedsPassword = false), or deploy as root.`,
        'connect'
      )
  }

  async survey(req: SurveyRequest): Promise<Survey> {
    const ordered = topoSort(req.closure)
    const args = [
      req.gcRoot,
      assertStorePath(req.toplevel, 'toplevel'),
      req.unchangedWhen,
      req.releaseIfUnchanged ? 'yes' : 'no',
      String(GC_ROOT_MAX_AGE_MINUTES),
      ...(req.lock ? lockArgs(req.lock) : ['', '', '', ''])
    ]
    const what = 'surveying the target (lock, running system, missing paths)'
    let unanswered = false
    // Named, not sent: the target lists the closure itself (a deploy user's gate as its user).
    if (req.closureFrom !== undefined) {
      const ref = closureByReference(ordered)
      const r = await this.run('survey', [...args, req.closureFrom], { timeoutMs: STEP_TIMEOUT_MS, what })
      const read = readByReference(r, ref)
      if ('stdout' in read) {
        const survey = parseSurvey({ ...r, stdout: read.stdout }, this.label, ordered)
        if (survey.kind === 'changed' && !(survey.copy instanceof Error)) survey.copy.listedFromCache = true
        return survey
      }
      unanswered = read.cacheUnanswered === true
      // Asked again under the lock it now holds (acquiring a lock it holds renews it).
      this.log.info(`${this.label}: ${read.why}; the survey sends it the closure's paths instead`)
      if (r.stderr.trim() !== '') this.log.untrusted(r.stderr.trim().slice(-300))
    }
    const r = await this.run('survey', args, {
      stdin: ordered.map(p => p.path).join('\n') + '\n',
      timeoutMs: STEP_TIMEOUT_MS,
      what
    })
    const survey = parseSurvey(r, this.label, ordered)
    if (unanswered && survey.kind === 'changed' && !(survey.copy instanceof Error))
      survey.copy.cacheUnanswered = true
    return survey
  }

  async lock(verb: LockVerb, req: LockRequest): Promise<string> {
    const r = await this.run('lock', [verb, ...lockArgs(req)], {
      timeoutMs: 60_000,
      what: `${verb === 'acquire' ? 'taking' : verb === 'renew' ? 'renewing' : 'releasing'} the deploy lock`
    })
    if (r.exitCode !== 0)
      throw new ActionError(
        `could not ${verb} the deploy lock on ${this.label}: ${r.stderr.trim().slice(-300)}`,
        'The target user must be able to write /nix/var (use root or sudo), and the target needs flock (util-linux, on every NixOS).',
        'copy'
      )
    return r.stdout.trim()
  }

  private async substitute(
    paths: string[],
    cache: BinaryCache | undefined,
    timeoutMs: number
  ): Promise<Set<string>> {
    // A gate's user is not the daemon's trusted user: a substituter or key it names would be
    // ignored, so it copies from the cache itself (the daemon checks the signatures: substitute.sh).
    const from = !cache ? [] : this.gated ? [cache.uri] : [cache.uri, cache.publicKey]
    const r = await this.run('substitute', from, {
      stdin: paths.join('\n') + '\n',
      timeoutMs,
      what:
        from.length > 0
          ? `substituting on the target from ${cache!.uri}`
          : 'substituting on the target from its own substituters'
    })
    if (r.exitCode !== 0 && r.stdout.trim() === '')
      throw new Error(`exit ${r.exitCode}: ${r.stderr.trim().slice(-200)}`)
    const missing = parseMissing(r.stdout, new Set(paths))
    // A gate's copy from the cache says why it fetched less (unreachable, a signature refused).
    if (missing.size > 0 && r.stderr.trim() !== '') {
      this.log.info(`The target's copy from the cache ended with (shown, not obeyed):`)
      this.log.untrusted(r.stderr.trim().slice(-1000))
    }
    return missing
  }

  private async importStream(
    codec: string,
    stream: Readable,
    check: string[],
    timeoutMs: number
  ): Promise<ImportResult> {
    if (this.gated) throw new Error('a gate imports only a signed binary cache (importSignedCache)')
    const r = await this.run('import', [codec, ...check], {
      stdin: stream,
      timeoutMs,
      what: 'importing the copied paths (nix-store --import)'
    })
    return { exitCode: r.exitCode, stderr: r.stderr, stillMissing: parseMissing(r.stdout, new Set(check)) }
  }

  private async importSignedCache(
    stream: Readable,
    check: string[],
    timeoutMs: number
  ): Promise<ImportResult> {
    const r = await this.run('import', [], {
      stdin: stream,
      timeoutMs,
      what: 'importing the copied paths (nix copy from a signed binary cache, as the deploy user)'
    })
    return { exitCode: r.exitCode, stderr: r.stderr, stillMissing: parseMissing(r.stdout, new Set(check)) }
  }

  private async queryMissing(paths: string[]): Promise<Set<string>> {
    const r = await this.run('query-missing', [], {
      stdin: paths.join('\n') + '\n',
      timeoutMs: STEP_TIMEOUT_MS,
      what: 'checking the copied paths'
    })
    if (r.exitCode !== 0)
      throw new ActionError(
        `checking the copied paths on ${this.label} failed: ${r.stderr.trim().slice(-300)}`,
        "Re-run the job; if it persists, check the target's Nix store (nix-store --verify).",
        'copy'
      )
    return parseMissing(r.stdout, new Set(paths))
  }

  async uploadKey(k: KeyFile): Promise<void> {
    const r = await this.run('upload-key', [k.destDir, k.name, k.user, k.group, k.permissions], {
      stdin: k.content,
      timeoutMs: 60_000,
      what: `uploading deployment.keys.${k.name}`
    })
    if (r.exitCode === UNSAFE_DEST_DIR)
      throw new ActionError(
        `deployment.keys.${k.name}: refusing to write it on ${this.label}: ${r.stderr.trim().slice(-300)}`,
        `A key's destDir must be a real directory owned by root and not writable by group or others (NixOps' default /run/keys is). Fix ${k.destDir} on the target or choose another destDir. The new system was not activated.`,
        'activate'
      )
    if (r.exitCode !== 0)
      throw new ActionError(
        `uploading deployment.keys.${k.name} to ${this.label}:${k.destDir} failed: ${r.stderr.trim().slice(-300)}`,
        `Check that ${k.user}:${k.group} exist on the target and that ${k.destDir} is writable by root. The new system was not activated.`,
        'activate'
      )
  }

  startAgent(req: AgentRequest): Promise<AgentSession | 'lost-lock'> {
    return startAgentOverSsh(this.wire, req)
  }

  async runHealthCheck(
    check: string,
    deadline: number,
    timeoutMs: number
  ): Promise<{ exitCode: number; output: string }> {
    // Health checks are the one place where input is meant to be shell: run as written by `sh -c`
    // (by a gate only when the running system lists it: services.nix-deploy-action.deployUser.healthChecks).
    const r = await this.runRetrying('health', [check], {
      deadline,
      shell: ['sh', '-c', check],
      timeoutMs,
      what: 'running a health check'
    })
    return { exitCode: r.exitCode, output: r.stdout + r.stderr }
  }

  async readState(): Promise<RemoteState> {
    const r = await this.run('probe', [], {
      timeoutMs: STEP_TIMEOUT_MS,
      what: 'reading the system state'
    })
    return stateFrom(r)
  }

  async writePlanRecord(
    record: PlanRecord,
    lock: LockRequest,
    timeoutMs = STEP_TIMEOUT_MS
  ): Promise<'written' | 'not-held'> {
    const r = await this.run('plan-record', [lock.dir, lock.id], {
      stdin: formatPlanRecord(record),
      timeoutMs,
      what: 'writing the deploy plan record'
    })
    if (r.exitCode === 0 && /^not-held$/m.test(r.stdout)) return 'not-held'
    if (r.exitCode !== 0 || !/^written$/m.test(r.stdout)) throw this.planRecordError(r.stderr)
    return 'written'
  }

  private planRecordError(stderr: string): ActionError {
    return new ActionError(
      `writing the deploy plan record on ${this.label} failed: ${stderr.trim().slice(-300)}`,
      'Check that /nix/var/nix-deploy-action on the target is a directory root can write.',
      'activate'
    )
  }

  async wrapUp(req: WrapUpRequest): Promise<WrapUpResult> {
    const args = [req.agentDir ?? '', req.gcRoot ?? '', req.lock?.dir ?? '', req.lock?.id ?? '']
    const r = await this.run(
      'wrap-up',
      req.record ? [...args, req.record.lock.dir, req.record.lock.id] : args,
      {
        stdin: req.record ? formatPlanRecord(req.record.record) : undefined,
        timeoutMs: STEP_TIMEOUT_MS,
        what: 'reading the system state'
      }
    )
    const result: WrapUpResult = {
      state: stateFrom(r),
      lockReleased: /^lock-release=released$/m.test(r.stdout)
    }
    if (req.record) {
      const written = /^record-write=(written|not-held)$/m.exec(r.stdout)?.[1] as
        | 'written'
        | 'not-held'
        | undefined
      result.record = written ?? this.planRecordError(r.stderr)
    }
    return result
  }

  private async listGenerations(): Promise<GenerationListing> {
    const r = await this.run('list-generations', [], { timeoutMs: 60_000, what: 'listing generations' })
    return parseGenerations(r.stdout)
  }

  private async deleteGenerations(numbers: number[]): Promise<string | undefined> {
    const args = numbers.map(String)
    const r = await this.run('delete-generations', args, {
      shell: ['nix-env', '-p', '/nix/var/nix/profiles/system', '--delete-generations', ...args],
      timeoutMs: STEP_TIMEOUT_MS,
      what: 'deleting old generations'
    })
    return r.exitCode === 0 ? undefined : r.stderr.trim().slice(-300) || `exit ${r.exitCode}`
  }

  private async removeGcRoot(link: string): Promise<void> {
    await this.run('remove-gc-root', [link], {
      shell: ['rm', '-f', link],
      timeoutMs: 60_000,
      what: 'removing the GC root'
    }).catch(() => undefined)
  }

  private async reboot(trial?: BootTrialRecord): Promise<RebootScheduled> {
    if (trial) for (const p of [trial.system, trial.previous]) assertStorePath(p, 'a boot trial system')
    if (trial?.once !== undefined && !isOnceFile(trial.once))
      throw new ActionError(
        `the target's one-shot boot file ${JSON.stringify(trial.once)} is not an absolute path of plain characters`,
        'Check /etc/nix-deploy-action/boot-once on the target (services.nix-deploy-action.bootTrial.bootOnce).',
        'activate'
      )
    const args = trial
      ? [
          trial.system,
          trial.previous,
          String(trial.previousGeneration ?? ''),
          String(trial.confirmSeconds),
          String(trial.loginSeconds ?? ''),
          trial.once ?? '',
          ...(trial.lock
            ? [
                trial.lock.dir,
                trial.lock.id,
                String(trial.lock.leaseSeconds),
                String(trial.lockWindowSeconds ?? 0)
              ]
            : [])
        ]
      : []
    const r = await this.run('reboot', args, { timeoutMs: 120_000, what: 'scheduling the reboot' })
    const answer = r.stdout.trim().split('\n')
    if (r.exitCode !== 0 || answer[answer.length - 1] !== 'scheduled')
      throw new ActionError(
        `could not reboot ${this.label}: ${r.stderr.trim().slice(-300)}`,
        'Nothing was rebooted. Reboot the target by hand (or fix systemd-run / reboot on it) to run the system its boot menu defaults to.',
        'activate'
      )
    if (trial?.once === undefined) return {}
    const failed = answer.find(l => l.startsWith('once-failed'))
    if (failed !== undefined) return { once: { ok: false, why: failed.slice('once-failed'.length).trim() } }
    return answer.includes('once') ? { once: { ok: true } } : {}
  }

  private async settleBootTrial(step: BootTrialStep): Promise<BootTrialAnswer> {
    const what = {
      'check-in': 'checking in with',
      confirm: 'confirming',
      reject: 'rejecting',
      'fell-back': 'settling the fallback of'
    }[step]
    // Each step is idempotent (boot-trial-steps.sh): a connection that drops right after the boot
    // (Wi-Fi associating again, a DHCP renewal) is dialled again, not taken for a failed step.
    const r = await this.runRetrying('boot-trial', [step], {
      // A one-shot trial's confirmation writes the boot entry (an SD card): not sent again while it may still run.
      timeoutMs: step === 'confirm' ? 200_000 : 60_000,
      deadline: Date.now() + BOOT_TRIAL_STEP_RETRY_MS,
      what: `${what} the boot trial`
    })
    const answer = r.stdout.trim()
    if (r.exitCode === 0 && BOOT_TRIAL_ANSWERS.has(answer)) return answer as BootTrialAnswer
    throw new ActionError(
      `${what} the boot trial on ${this.label} failed: ${r.stderr.trim().slice(-300) || `exit ${r.exitCode}`}`,
      step === 'reject'
        ? 'The trial goes back to the previous system by itself when it is not confirmed.'
        : 'Unconfirmed, the target goes back to its previous system after the trial: deploy again once it is reachable.',
      'verify'
    )
  }

  async reconnect(): Promise<void> {
    await this.session.reconnect()
  }

  async reconnectToConfirm(): Promise<void> {
    await this.session.redialTarget()
  }

  close(): void {
    this.session.close()
  }
}

/** What target/scripts/boot-trial-steps.sh answers. */
const BOOT_TRIAL_ANSWERS = new Set<string>([
  'reached',
  'confirmed',
  'not-default',
  'rejected',
  'expired',
  'none',
  'fell-back',
  'not-run'
])

/** A one-shot boot file the target names: an absolute path in characters no shell or U-Boot reads twice. */
export function isOnceFile(path: string): boolean {
  return /^\/[A-Za-z0-9._/+-]+$/.test(path) && !path.includes('..')
}

/** The state probe_state printed (probe.sh), or why it could not be read. */
function stateFrom(r: { exitCode: number; stdout: string; stderr: string }): RemoteState {
  if (r.exitCode !== 0)
    throw new ActionError(
      `reading the system state of the target failed (exit ${r.exitCode}): ${r.stderr.trim().slice(-300)}`,
      'The target must have a POSIX shell with readlink, id and df (any NixOS has). With sudo, check that `sudo -n true` works for target-user.',
      'connect'
    )
  return parseRemoteState(r.stdout)
}

/**
 * Asks the login whether it is a deploy user's gate (nixos/deploy-user.nix): one command, sent
 * without sudo. A login that takes commands has no such command (exit 127) and is not one. A gate
 * of another release fails the deploy, naming what to update.
 */
async function isGate(session: TargetSession): Promise<boolean> {
  const r = await session.exec(`${GATE_COMMAND} version`, {
    timeoutMs: 30_000,
    what: 'asking whether the login is a deploy user',
    noSudo: true
  })
  const v = parseGateVersion(r.stdout)
  if (!v) return false
  const mismatch = gateMismatch(v)
  if (mismatch)
    throw new ActionError(
      `${session.label}: ${mismatch}`,
      "The target's deploy user runs the scripts of the release its nixos/deploy-user.nix came from: deploy the system that brings this release's module once with the action's release the target has (or as root), then use this one; keep the two pinned to the same tag.",
      'connect'
    )
  return true
}

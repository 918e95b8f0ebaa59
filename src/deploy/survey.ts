import { ActionError } from '../errors'
import { PathInfo, topoSort } from '../nix/closure'
import { assertStorePath } from '../nix/store-path'
import { parseClosureListing, ClosureEntry } from '../report/diff'
import { Remote } from '../ssh/connection'
import { shellCommand } from '../ssh/quote'
import { RUNNING_CLOSURE_SCRIPT, SURVEY_SCRIPT } from '../target/scripts'
import { CopyPlan, GC_ROOT_MAX_AGE_MINUTES } from './copy'
import { LockHolder, LockRequest, lockArgs, parseLockAnswer } from './lock'
import { RemoteState, parseRemoteState } from './remote-state'

export { RUNNING_CLOSURE_SCRIPT, SURVEY_SCRIPT }

/** The running system's closure for the package diff, or why it could not be listed. */
export type RunningClosure = { entries: ClosureEntry[] } | { error: string }

/**
 * Starts listing the running system's closure; never rejects (a failure only costs the diff). Runs
 * alongside the survey and the copy, and must be read before the activation changes what runs.
 */
export function listRunningClosure(host: Remote): Promise<RunningClosure> {
  return host
    .exec(shellCommand(['sh', '-c', RUNNING_CLOSURE_SCRIPT, 'sh']), {
      timeoutMs: 120_000,
      what: 'listing the running closure'
    })
    .then(
      r => {
        if (r.exitCode !== 0) return { error: r.stderr.trim().slice(-300) || `exit ${r.exitCode}` }
        const [paths, sizes] = r.stdout.split('--sizes--')
        return { entries: parseClosureListing(paths, sizes) }
      },
      (e: unknown) => ({ error: (e as Error).message })
    )
}

/** What the survey found: the lock held by another run, or the state under this run's lock. */
export type Survey =
  | { kind: 'held'; holder: LockHolder }
  | { kind: 'unchanged'; state: RemoteState; lockReleased: boolean }
  | {
      kind: 'changed'
      state: RemoteState
      /** What to copy, or why the target could not say (raised after the state checks). */
      copy: CopyPlan | ActionError
    }

/** When a target counts as already running the new system (per mode); 'never' for dry runs. */
export type UnchangedWhen = 'switch' | 'boot' | 'test' | 'never'

export interface SurveyRequest {
  toplevel: string
  closure: PathInfo[]
  gcRoot: string
  unchangedWhen: UnchangedWhen
  /** Release the lock in the same command when the target is unchanged (no keys to upload under it). */
  releaseIfUnchanged: boolean
  lock?: LockRequest
}

/** Splits the survey's output at its section markers (a marker line starts a section). */
function sections(stdout: string): Map<string, string> {
  const out = new Map<string, string>()
  let name: string | undefined
  let lines: string[] = []
  const flush = (): void => {
    if (name) out.set(name, lines.join('\n'))
  }
  for (const line of stdout.split('\n')) {
    const m = /^--(lock|state|unchanged|copy)--$/.exec(line)
    if (m) {
      flush()
      name = m[1]
      lines = []
    } else lines.push(line)
  }
  flush()
  return out
}

/** Reads the survey's answer; `ordered` is the new closure, dependencies first. */
export function parseSurvey(
  r: { exitCode: number; stdout: string; stderr: string },
  label: string,
  ordered: PathInfo[]
): Survey {
  const parts = sections(r.stdout)
  if (r.exitCode === 5)
    throw new ActionError(
      `could not take the deploy lock on ${label}: ${r.stderr.trim().slice(-300)}`,
      'The target user must be able to write /nix/var (use root or sudo), and the target needs flock (util-linux, on every NixOS).',
      'connect'
    )
  const lockText = (parts.get('lock') ?? '').trim()
  if (r.exitCode === 0 && lockText.startsWith('held')) {
    const answer = parseLockAnswer(lockText)
    if (!answer.acquired) return { kind: 'held', holder: answer.holder }
  }
  const stateText = parts.get('state')
  if (stateText === undefined || ![0, 3, 4].includes(r.exitCode))
    throw new ActionError(
      `reading the system state of ${label} failed (exit ${r.exitCode}): ${r.stderr.trim().slice(-300)}`,
      'The target must have a POSIX shell with readlink, id and df (any NixOS has). With sudo, check that `sudo -n true` works for target-user.',
      'connect'
    )
  const state = parseRemoteState(stateText)
  const unchanged = parts.get('unchanged')
  if (unchanged !== undefined && r.exitCode === 0)
    return { kind: 'unchanged', state, lockReleased: unchanged.trim() === 'released' }
  let copy: CopyPlan | ActionError
  if (r.exitCode === 3)
    copy = new ActionError(
      `could not create a GC root on ${label}: ${r.stderr.trim().slice(-300)}`,
      'The target user must be able to write /nix/var/nix/gcroots (use root or sudo).',
      'copy'
    )
  else if (r.exitCode === 4)
    copy = new ActionError(
      `asking ${label} which store paths it lacks failed: ${r.stderr.trim().slice(-500)}`,
      'Check that Nix works on the target (nix-store --version).',
      'copy'
    )
  else {
    const lines = (parts.get('copy') ?? '').split('\n')
    const listed = (prefix: string): string[] =>
      lines.filter(l => l.startsWith(prefix)).map(l => l.slice(prefix.length).trim())
    // Only paths of the new closure count: `ordered` is what was asked.
    const missing = new Set(listed('missing '))
    copy = {
      toCopy: ordered.filter(p => missing.has(p.path)),
      targetCodecs: new Set(listed('codec '))
    }
  }
  return { kind: 'changed', state, copy }
}

/**
 * Asks the target, in one command: first the deploy lock; then, under it, what it runs, whether it
 * already runs `toplevel`, what it can decompress and which paths of `closure` it lacks; pins
 * `toplevel` with a GC root (the caller removes it once the profile holds the system).
 */
export async function surveyTarget(host: Remote, req: SurveyRequest): Promise<Survey> {
  const ordered = topoSort(req.closure)
  const r = await host.exec(
    shellCommand([
      'sh',
      '-c',
      SURVEY_SCRIPT,
      'sh',
      req.gcRoot,
      assertStorePath(req.toplevel, 'toplevel'),
      req.unchangedWhen,
      req.releaseIfUnchanged ? 'yes' : 'no',
      String(GC_ROOT_MAX_AGE_MINUTES),
      ...(req.lock ? lockArgs(req.lock) : ['', '', '', ''])
    ]),
    {
      stdin: ordered.map(p => p.path).join('\n') + '\n',
      timeoutMs: 120_000,
      what: 'surveying the target (lock, running system, missing paths)'
    }
  )
  return parseSurvey(r, host.label, ordered)
}

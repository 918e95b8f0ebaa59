import { createHash } from 'crypto'
import { ActionError } from '../errors'
import { PathInfo } from '../nix/closure'
import { isStorePath } from '../nix/store-path'
import { ClosureEntry } from '../report/diff'
import { parseLockAnswer } from './lock/on-target'
import { parseRemoteState } from './remote-state'
import { CopyPlan, RunningClosure, Survey } from './target'

/**
 * The running system's closure from the survey's --running-- section: the new closure's paths but
 * those it lacks (the missing ones, and "new": those the store has but it does not run), and its
 * own the new one lacks ("only", with their sizes). A path that is not a store path, or a count
 * that does not match what comes out (a listing cut short, a target that says anything), gives no diff.
 */
export function parseRunning(
  text: string | undefined,
  ordered: PathInfo[],
  missing: Set<string>
): RunningClosure {
  if (text === undefined) return { error: 'the target did not list its running closure' }
  const lines = text.split('\n').map(l => l.trim())
  const count = lines.map(l => /^count +([0-9]+)$/.exec(l)).find(m => m)?.[1]
  const lacks = new Set(missing)
  const only: ClosureEntry[] = []
  let foreign = false
  for (const l of lines) {
    const m = /^(new|only) (\S+)(?: ([0-9]+))?$/.exec(l)
    if (!m) continue
    if (!isStorePath(m[2]) || (m[1] === 'only') !== (m[3] !== undefined)) foreign = true
    else if (m[1] === 'new') lacks.add(m[2])
    else only.push({ path: m[2], narSize: Number(m[3]) })
  }
  const shared = ordered.filter(p => !lacks.has(p.path)).map(p => ({ path: p.path, narSize: p.narSize }))
  const entries = [...shared, ...only]
  if (
    foreign ||
    count === undefined ||
    Number(count) !== entries.length ||
    new Set(entries.map(e => e.path)).size !== entries.length
  )
    return {
      error: `the target's listing of its running closure does not add up (${count ?? 'no'} paths said, ${entries.length} put together)`
    }
  return { entries }
}

/**
 * The new closure as survey.sh lists it when it is named, not sent (a deploy plan's, CACHE given):
 * its paths sorted bytewise (as `LC_ALL=C sort`; store paths are ASCII), and the SHA-256 of that
 * listing, one path per line, that the target answers with.
 */
export function closureByReference(closure: PathInfo[]): { sorted: string[]; digest: string } {
  const sorted = [...new Set(closure.map(p => p.path))].sort()
  return {
    sorted,
    digest: createHash('sha256')
      .update(sorted.join('\n') + '\n')
      .digest('hex')
  }
}

const PLACES = /^(missing|new)-at ([0-9]+)(?:-([0-9]+))?$/

/**
 * The answer of a survey asked with the closure by reference, each place in the closure as the
 * path it is in `ref.sorted` (the runner's own listing from the cache); or why it cannot be read
 * so, and the target is asked again with the paths: it could not list the closure, it listed
 * another one, or it named places outside it, out of order or twice (survey.sh names each place
 * once, in order: whatever a lying target says, no more paths come out than the closure has). An
 * answer that never got as far as the closure (the lock held, the system unchanged, an error) is
 * read as it is.
 */
export function readByReference(
  r: { exitCode: number; stdout: string },
  ref: { sorted: string[]; digest: string }
): { stdout: string } | { why: string; cacheUnanswered?: boolean } {
  const parts = sections(r.stdout)
  const copy = parts.get('copy')
  if (copy === undefined || r.exitCode !== 0) return { stdout: r.stdout }
  const lines = copy.split('\n').map(l => l.trim())
  if (lines.includes('closure unknown unanswered'))
    return { why: 'the cache did not answer it (no connection, or nothing for 10 s)', cacheUnanswered: true }
  if (lines.includes('closure unknown')) return { why: 'it could not list the closure from the cache' }
  const m = lines.map(l => /^closure +([0-9]+) +([0-9a-f]{64})\b/.exec(l)).find(x => x)
  if (!m) return { why: 'it did not say which closure it listed' }
  if (Number(m[1]) !== ref.sorted.length || m[2] !== ref.digest)
    return {
      why: `it listed another closure (${m[1]} paths, where the runner listed ${ref.sorted.length} from the same cache)`
    }
  for (const name of ['copy', 'running']) {
    const text = parts.get(name)
    if (text === undefined) continue
    const after = new Map<string, number>()
    const out: string[] = []
    for (const line of text.split('\n')) {
      const l = line.trim()
      if (!/^(missing|new)-at /.test(l)) {
        out.push(line)
        continue
      }
      const p = PLACES.exec(l)
      if (!p) return { why: `it answered what is not a place in the closure (${l.slice(0, 80)})` }
      const [first, last] = [Number(p[2]), Number(p[3] ?? p[2])]
      if (first > last || last >= ref.sorted.length || first <= (after.get(p[1]) ?? -1))
        return { why: `it named places outside the closure, out of order or twice (${l.slice(0, 80)})` }
      after.set(p[1], last)
      for (const path of ref.sorted.slice(first, last + 1)) out.push(`${p[1]} ${path}`)
    }
    parts.set(name, out.join('\n'))
  }
  return { stdout: [...parts].map(([name, text]) => `--${name}--\n${text}`).join('\n') }
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
    const m = /^--(lock|state|unchanged|copy|running)--$/.exec(line)
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
  // What it runs only with what it lacks: the diff needs both (no diff when the query failed).
  const running =
    copy instanceof Error
      ? { error: 'the target could not say which paths it lacks' }
      : parseRunning(parts.get('running'), ordered, new Set(copy.toCopy.map(p => p.path)))
  return { kind: 'changed', state, copy, running }
}

import { ActionError } from '../errors'
import { PathInfo, topoSort } from '../nix/closure'
import { assertStorePath } from '../nix/store-path'
import { parseClosureListing, ClosureEntry } from '../report/diff'
import { Remote } from '../ssh/connection'
import { shellCommand } from '../ssh/quote'
import { CopyPlan, gcRootPath } from './copy'
import { PROBE_SCRIPT, RemoteState, parseRemoteState } from './remote-state'

/**
 * Everything the deploy must know from the target before copying, as one SSH command: every
 * command costs a session, a shell start and a round trip through the jump host, and the answers
 * are small.
 *   --state--  what it runs and has (PROBE_SCRIPT's key=value lines)
 *   --copy--   "codec NAME" for each decompressor it has, "missing PATH" for each path of the new
 *              closure (given on stdin) its store lacks; before asking, the new system is pinned
 *              with a GC root (a symlink may point at a path that does not exist yet), so a
 *              garbage collection on the target between import and profile switch cannot delete
 *              what is copied. Exit 3: no GC root; exit 4: the store query failed.
 * The running system's closure (only the package diff needs it) is listed by a second command
 * alongside, off the copy's critical path: see listRunningClosure.
 * usage: sh -c SURVEY_SCRIPT sh GC_ROOT_LINK TOPLEVEL < PATHS
 */
export const SURVEY_SCRIPT = String.raw`set -f
echo '--state--'
${PROBE_SCRIPT}
echo '--copy--'
mkdir -p "$(dirname "$1")" && ln -sfn "$2" "$1" || exit 3
for c in zstd xz gzip; do command -v "$c" >/dev/null 2>&1 && echo "codec $c"; done
missing=$(nix-store --check-validity --print-invalid $(cat)) || exit 4
[ -z "$missing" ] || printf '%s\n' "$missing" | sed 's/^/missing /'`

/** Lists the running system's closure with NAR sizes: paths, a separator line, sizes. */
export const RUNNING_CLOSURE_SCRIPT = String.raw`set -f
paths=$(nix-store -qR /run/current-system) || exit 1
printf '%s\n' "$paths"
echo '--sizes--'
nix-store -q --size $paths`

/** The running system's closure for the package diff, or why it could not be listed. */
export type RunningClosure = { entries: ClosureEntry[] } | { error: string }

/**
 * Starts listing the running system's closure; never rejects (a failure only costs the diff). Runs
 * alongside the survey and the copy, and must be read before the activation changes what runs.
 */
export function listRunningClosure(host: Remote): Promise<RunningClosure> {
  return host.exec(RUNNING_CLOSURE_SCRIPT, { timeoutMs: 120_000 }).then(
    r => {
      if (r.exitCode !== 0) return { error: r.stderr.trim().slice(-300) || `exit ${r.exitCode}` }
      const [paths, sizes] = r.stdout.split('--sizes--')
      return { entries: parseClosureListing(paths, sizes) }
    },
    (e: unknown) => ({ error: (e as Error).message })
  )
}

export interface Survey {
  state: RemoteState
  /** What to copy, or why the target could not say (raised after the state checks). */
  copy: CopyPlan | ActionError
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
    const m = /^--(state|copy)--$/.exec(line)
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
  const stateText = parts.get('state')
  if (stateText === undefined || ![0, 3, 4].includes(r.exitCode))
    throw new ActionError(
      `reading the system state of ${label} failed (exit ${r.exitCode}): ${r.stderr.trim().slice(-300)}`,
      'The target must have a POSIX shell with readlink, id and df (any NixOS has). With sudo, check that `sudo -n true` works for target-user.',
      'connect'
    )
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
  return { state: parseRemoteState(stateText), copy }
}

/**
 * Asks the target, in one command, what it runs, what it can decompress and which paths of
 * `closure` it lacks; pins `toplevel` with a GC root (the caller removes it once the profile holds
 * the system).
 */
export async function surveyTarget(host: Remote, toplevel: string, closure: PathInfo[]): Promise<Survey> {
  const ordered = topoSort(closure)
  const r = await host.exec(
    shellCommand([
      'sh',
      '-c',
      SURVEY_SCRIPT,
      'sh',
      gcRootPath(toplevel),
      assertStorePath(toplevel, 'toplevel')
    ]),
    { stdin: ordered.map(p => p.path).join('\n') + '\n', timeoutMs: 120_000 }
  )
  return parseSurvey(r, host.label, ordered)
}

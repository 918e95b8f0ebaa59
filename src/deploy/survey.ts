import { ActionError } from '../errors'
import { PathInfo, topoSort } from '../nix/closure'
import { assertStorePath } from '../nix/store-path'
import { parseClosureListing, ClosureEntry } from '../report/diff'
import { Remote } from '../ssh/connection'
import { shellCommand } from '../ssh/quote'
import { CopyPlan, gcRootPath, parseMissing } from './copy'
import { PROBE_SCRIPT, RemoteState, parseRemoteState } from './remote-state'

/**
 * Everything the deploy asks the target before copying, as one SSH command: every command costs a
 * session, a shell start and a round trip through the jump host, and the answers are small.
 *   --state--    what it runs and has (PROBE_SCRIPT's key=value lines)
 *   --copy--     "codec NAME" for each decompressor it has, "missing PATH" for each path of the new
 *                closure (given on stdin) its store lacks; before asking, the new system is pinned
 *                with a GC root (a symlink may point at a path that does not exist yet), so a
 *                garbage collection on the target between import and profile switch cannot delete
 *                what is copied. Exit 3: no GC root; exit 4: the store query failed.
 *   --closure--  the running system's closure, then --sizes-- and their NAR sizes (package diff);
 *                listed in the background meanwhile. --closure-failed-- and the error otherwise.
 * usage: sh -c SURVEY_SCRIPT sh GC_ROOT_LINK TOPLEVEL < PATHS
 */
export const SURVEY_SCRIPT = String.raw`set -f
work=$(mktemp -d) || exit 5
trap 'rm -rf "$work"' EXIT
{ paths=$(nix-store -qR /run/current-system) && printf '%s\n' "$paths" && echo '--sizes--' &&
  nix-store -q --size $paths; } >"$work/closure" 2>"$work/closure.err" &
listing=$!
echo '--state--'
${PROBE_SCRIPT}
echo '--copy--'
status=0
if mkdir -p "$(dirname "$1")" && ln -sfn "$2" "$1"; then
  for c in zstd xz gzip; do command -v "$c" >/dev/null 2>&1 && echo "codec $c"; done
  if missing=$(nix-store --check-validity --print-invalid $(cat)); then
    [ -z "$missing" ] || printf '%s\n' "$missing" | sed 's/^/missing /'
  else
    status=4
  fi
else
  status=3
fi
if wait "$listing"; then echo '--closure--'; cat "$work/closure"; else echo '--closure-failed--'; tail -c 300 "$work/closure.err"; fi
exit $status`

export interface Survey {
  state: RemoteState
  /** The running system's closure, or why it could not be listed (only the package diff needs it). */
  closure: { entries: ClosureEntry[] } | { error: string }
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
    const m = /^--(state|copy|closure|closure-failed)--$/.exec(line)
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
      'The target must have a POSIX shell with readlink, id, df and mktemp (any NixOS has). With sudo, check that `sudo -n true` works for target-user.',
      'connect'
    )
  const listing = parts.get('closure')
  const closure =
    listing !== undefined
      ? (() => {
          const [paths, sizes] = listing.split('--sizes--')
          return { entries: parseClosureListing(paths, sizes) }
        })()
      : { error: (parts.get('closure-failed') ?? 'no answer').trim() || 'no answer' }

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
    const missing = parseMissing(
      lines
        .filter(l => l.startsWith('missing '))
        .map(l => l.slice(8))
        .join('\n'),
      new Set(ordered.map(p => p.path))
    )
    copy = {
      toCopy: ordered.filter(p => missing.has(p.path)),
      targetCodecs: new Set(lines.filter(l => l.startsWith('codec ')).map(l => l.slice(6).trim()))
    }
  }
  return { state: parseRemoteState(stateText), closure, copy }
}

/**
 * Asks the target, in one command, what it runs, what its running system contains, what it can
 * decompress and which paths of `closure` it lacks; pins `toplevel` with a GC root (the caller
 * removes it once the profile holds the system).
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

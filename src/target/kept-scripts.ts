/**
 * Scripts a target keeps, so a command carries a few hashes instead of its script. Each command
 * used to carry its script's text (the survey's 6 KB, the agent's 10 KB): most of what crossed the
 * runner's link per deploy, again on every deploy. A target that takes shell commands (root, or
 * sudo) keeps the files scripts are made of in KEPT_SCRIPTS_DIR, each named by the SHA-256 of its
 * text (keep-scripts.sh writes them, kept-run.sh checks each against its name before it runs
 * anything), so only a new release of the action sends them, once per target. A target that
 * cannot keep them (no sha256sum, a read-only /nix/var) gets each script with its command, as
 * before. A deploy user's gate runs its own copies (gate.ts) and never takes these.
 */
import { createHash } from 'crypto'
import { RemoteResult } from '../ssh/connection'
import { shellCommand } from '../ssh/quote'
import { KEEP_SCRIPTS_SCRIPT, KEPT_FILES, KEPT_RUN_SCRIPT, ScriptFile } from './scripts'
import { WIRE_SCRIPT_FILES } from './scripts.generated'

/** Root's, beside the deploy lock and the plan record; private to root (keep-scripts.sh). */
export const KEPT_SCRIPTS_DIR = '/nix/var/nix-deploy-action/scripts'
/** kept-run.sh's exit status when a file it needs is missing or changed (it ran nothing). */
export const SCRIPT_MISSING_EXIT = 97
const SCRIPT_MISSING_SAID = 'nda-script-missing'

const hashes = new Map<ScriptFile, string>()

/** The name a file is kept under: the SHA-256 of its text as sent. */
export function keptName(file: ScriptFile): string {
  let h = hashes.get(file)
  if (h === undefined) {
    h = createHash('sha256').update(WIRE_SCRIPT_FILES[file], 'utf8').digest('hex')
    hashes.set(file, h)
  }
  return h
}

/**
 * The command that runs the script made of `parts` from the target's kept files, with `args`;
 * with `inputParts`, its stdin is those files' text (the command's own stdin is not read). With
 * `refresh` (a deploy that changes the target), the files used are marked as used.
 */
export function keptRunCommand(
  parts: readonly ScriptFile[],
  inputParts: readonly ScriptFile[] | undefined,
  args: readonly string[],
  refresh = true,
  dir = KEPT_SCRIPTS_DIR
): string {
  const names = (files: readonly ScriptFile[] = []): string => files.map(keptName).join(' ')
  return shellCommand([
    'sh',
    '-c',
    KEPT_RUN_SCRIPT,
    'sh',
    dir,
    names(parts),
    names(inputParts),
    refresh ? '1' : '0',
    ...args
  ])
}

/** The command that writes every kept file on the target (prints "kept" when all were written). */
export function keepScriptsCommand(
  dir = KEPT_SCRIPTS_DIR,
  files: readonly ScriptFile[] = KEPT_FILES
): string {
  return shellCommand([
    'sh',
    '-c',
    KEEP_SCRIPTS_SCRIPT,
    'sh',
    dir,
    ...files.flatMap(f => [keptName(f), WIRE_SCRIPT_FILES[f]])
  ])
}

/**
 * kept-run.sh ran nothing: a file it needs is not kept (or not as its name says). Its word is the
 * last line: the login may have said something first ("Could not chdir to home directory").
 */
export function isScriptMissing(r: Pick<RemoteResult, 'exitCode' | 'stderr'>): boolean {
  return r.exitCode === SCRIPT_MISSING_EXIT && r.stderr.trimEnd().split('\n').pop() === SCRIPT_MISSING_SAID
}

/**
 * The shell scripts run on the target (src/target/scripts/*.sh, embedded at build time). They are
 * fixed text: every value from the action reaches them as a positional parameter or an option
 * value (quoted by shellCommand), never pasted into the script, so no input can change what they
 * do. They avoid bashisms: the target's /bin/sh may be any POSIX shell. Libraries (lock.sh,
 * probe.sh, wake.sh, record.sh) are prepended to the scripts that use them.
 */
import { SCRIPT_FILES, WIRE_SCRIPT_FILES } from './scripts.generated'

export type ScriptFile = keyof typeof SCRIPT_FILES
/** Each script as sent, by its text: the files it is made of (what a target keeps: kept-scripts.ts). */
const PARTS = new Map<string, readonly ScriptFile[]>()
// As sent: minified (WIRE_SCRIPT_FILES, scripts/embed-scripts.js), joined by newlines; by their
// hashes to a target that keeps them (kept-scripts.ts).
const compose = (...files: ScriptFile[]): string => {
  const text = files.map(f => WIRE_SCRIPT_FILES[f]).join('\n')
  PARTS.set(text, files)
  return text
}

/** The files a script sent to a target is made of; undefined for any other text. */
export function partsOf(script: string): readonly ScriptFile[] | undefined {
  return PARTS.get(script)
}

/** The deploy lock's operations (lock.sh): acquire, renew, release. */
export const LOCK_SCRIPT = compose('lock.sh', 'lock-command.sh')
export const SURVEY_SCRIPT = compose('lock.sh', 'probe.sh', 'survey.sh')
export const PROBE_SCRIPT = compose('probe.sh', 'probe-command.sh')
export const AGENT_SCRIPT = compose('lock.sh', 'wake.sh', 'agent.sh')
/** The start as a deploy user's gate composes it (nixos/deploy-user/root.sh): for the tests. */
export const START_AGENT_SCRIPT = compose('lock.sh', 'start-agent.sh')
/** The start as a login that takes commands runs it: the agent (stdin) written first, in one command. */
export const PLACE_AND_START_AGENT_SCRIPT = compose('lock.sh', 'place-agent.sh', 'start-agent.sh')
export const FOLLOW_SCRIPT = compose('wake.sh', 'follow.sh')
/** The decision, then (given where the log was) a follow poll's answer: follow.sh after it. */
export const DECIDE_SCRIPT = compose('wake.sh', 'decide.sh', 'follow.sh')
export const ABANDON_SCRIPT = compose('abandon.sh')
export const REBOOT_SCRIPT = compose('lock.sh', 'reboot.sh')
export const BOOT_TRIAL_SCRIPT = compose('boot-trial-steps.sh')
export const UPLOAD_KEY_SCRIPT = compose('upload-key.sh')
export const IMPORT_SCRIPT = compose('import.sh')
export const SUBSTITUTE_SCRIPT = compose('substitute.sh')
export const QUERY_MISSING_SCRIPT = compose('query-missing.sh')
export const LIST_GENERATIONS_SCRIPT = compose('list-generations.sh')
export const WRAP_UP_SCRIPT = compose('lock.sh', 'probe.sh', 'record.sh', 'wrap-up.sh')
export const PLAN_RECORD_SCRIPT = compose('lock.sh', 'record.sh', 'plan-record.sh')

/** What runs a script the target keeps, and what keeps them there (kept-scripts.ts): sent as they are. */
export const KEPT_RUN_SCRIPT = WIRE_SCRIPT_FILES['kept-run.sh']
export const KEEP_SCRIPTS_SCRIPT = WIRE_SCRIPT_FILES['keep-scripts.sh']

/** Every file a composed script is made of: what a target keeps. */
export const KEPT_FILES: readonly ScriptFile[] = [...new Set([...PARTS.values()].flat())].sort()

/** Every script as it is sent, by name (for the tests: each must be valid POSIX sh). */
export const ALL_SCRIPTS = {
  LOCK_SCRIPT,
  SURVEY_SCRIPT,
  PROBE_SCRIPT,
  AGENT_SCRIPT,
  START_AGENT_SCRIPT,
  PLACE_AND_START_AGENT_SCRIPT,
  FOLLOW_SCRIPT,
  DECIDE_SCRIPT,
  ABANDON_SCRIPT,
  UPLOAD_KEY_SCRIPT,
  IMPORT_SCRIPT,
  SUBSTITUTE_SCRIPT,
  QUERY_MISSING_SCRIPT,
  LIST_GENERATIONS_SCRIPT,
  WRAP_UP_SCRIPT,
  PLAN_RECORD_SCRIPT,
  REBOOT_SCRIPT,
  BOOT_TRIAL_SCRIPT,
  KEPT_RUN_SCRIPT,
  KEEP_SCRIPTS_SCRIPT
}

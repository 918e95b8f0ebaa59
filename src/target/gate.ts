/**
 * The deploy user's gate (nixos/deploy-user.nix, nixos/deploy-user/gate.sh): a target whose SSH key
 * runs only the action's own verbs. A command to it is "nix-deploy-action-gate VERB _B64..." (each
 * argument base64 behind an underscore: the gate splits on spaces and never parses a value as
 * shell). The target runs its own copies of the action's scripts (src/target/scripts), so the two
 * must be of the same release: `version` answers the gate's protocol and the hash of its scripts.
 */
import { createHash } from 'crypto'
import { SCRIPT_FILES } from './scripts.generated'

export const GATE_COMMAND = 'nix-deploy-action-gate'
/** nixos/deploy-user/PROTOCOL (a unit test checks they agree). */
export const GATE_PROTOCOL = 4

/** The verbs the gate runs (gate.sh; nda-root checks each one's arguments again). */
export type GateVerb =
  | 'version'
  | 'import'
  | 'query-missing'
  | 'substitute'
  | 'survey'
  | 'lock'
  | 'probe'
  | 'prepare-agent'
  | 'start-agent'
  | 'follow'
  | 'decide'
  | 'abandon'
  | 'remove-agent-dir'
  | 'health'
  | 'wrap-up'
  | 'list-generations'
  | 'delete-generations'
  | 'remove-gc-root'
  | 'reboot'
  | 'boot-trial'
  | 'upload-key'
  | 'plan-record'

/**
 * The hash of the action's scripts as deploy-user.nix computes it of its own copies: sha256 of
 * their contents joined in the order of their names.
 */
export function scriptsHash(files: Record<string, string> = SCRIPT_FILES): string {
  const h = createHash('sha256')
  for (const name of Object.keys(files).sort()) h.update(files[name], 'utf8')
  return h.digest('hex')
}

/** The command line for one verb. A value with a line break cannot pass (the gate refuses it). */
export function gateCommand(verb: GateVerb, args: string[] = []): string {
  for (const a of args)
    if (/[\r\n]/.test(a))
      throw new Error(`a value for the gate's ${verb} holds a line break: ${JSON.stringify(a)}`)
  return [GATE_COMMAND, verb, ...args.map(a => `_${Buffer.from(a, 'utf8').toString('base64')}`)].join(' ')
}

export interface GateVersion {
  protocol: number
  scriptsHash: string
}

/** The gate's answer to `version`, or undefined when the target is not one (a shell said something else). */
export function parseGateVersion(stdout: string): GateVersion | undefined {
  const m = /^nix-deploy-action-gate ([0-9]+) ([0-9a-f]{64})$/m.exec(stdout)
  return m ? { protocol: Number(m[1]), scriptsHash: m[2] } : undefined
}

/** Why this action cannot deploy through that gate (another release's scripts), or undefined. */
export function gateMismatch(
  v: GateVersion,
  ours = { protocol: GATE_PROTOCOL, scriptsHash: scriptsHash() }
): string | undefined {
  if (v.protocol !== ours.protocol)
    return `the target's nixos/deploy-user.nix speaks protocol ${v.protocol}, this action ${ours.protocol}`
  if (v.scriptsHash !== ours.scriptsHash)
    return `the target's nixos/deploy-user.nix runs other scripts (${v.scriptsHash.slice(0, 12)}) than this action's (${ours.scriptsHash.slice(0, 12)})`
  return undefined
}

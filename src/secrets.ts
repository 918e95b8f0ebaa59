import * as core from '@actions/core'

/**
 * Masks a secret in everything the runner shows. A multi-line secret is masked line by line too:
 * the runner matches masks per line of output, so one mask for the whole value would not hide a
 * line of it printed alone. (Very short lines are left: masking "}" would garble the whole log.)
 */
export function maskSecret(value: string): void {
  core.setSecret(value)
  if (value.trim().length >= 4) masked.add(value)
  for (const line of value.split(/\r?\n/))
    if (line.trim().length >= 4) {
      core.setSecret(line.trim())
      masked.add(line.trim())
    }
}

/** Every value masked so far (whole and line by line), longest first when scrubbing. */
const masked = new Set<string>()

/**
 * Replaces every masked value in a text with ***, as the runner does for the log, for what the
 * runner does not mask: the job summary and step outputs. A tool's error message may quote a secret
 * it was given (Nix quotes a value it cannot parse, e.g. an access token where a hash was expected).
 */
export function scrubSecrets(text: string): string {
  let out = text
  for (const secret of [...masked].sort((a, b) => b.length - a.length)) out = out.split(secret).join('***')
  return out
}

/**
 * Variables no child process may see. The runner hands every input to the action as INPUT_<NAME>
 * (the SSH keys among them) and the cache service's credentials as ACTIONS_*_TOKEN; a child that
 * inherits them can print or send them: `nix eval --impure` lets any Nix code read them with
 * builtins.getEnv, and a keyCommand is the user's own program. Only this process (the @actions/*
 * libraries in it) needs them.
 */
export function isPrivateVariable(name: string): boolean {
  return (
    /^INPUT_/i.test(name) ||
    /^ACTIONS_(RUNTIME|ID_TOKEN_REQUEST)_TOKEN$/i.test(name) ||
    /^ACTIONS_ID_TOKEN_REQUEST_URL$/i.test(name)
  )
}

/** The environment for every child process the action starts: its own, less the private variables. */
export function childEnv(base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(base)) if (!isPrivateVariable(k)) env[k] = v
  return env
}

/**
 * Removes the secret inputs from this process's environment once they are read (into memory):
 * whatever starts a child later without childEnv still cannot hand them on.
 */
export function forgetSecretInputs(names: readonly string[], env: NodeJS.ProcessEnv = process.env): void {
  for (const name of names) delete env[`INPUT_${name.replace(/ /g, '_').toUpperCase()}`]
}

import * as core from '@actions/core'
import { closeSync, openSync, readFileSync, writeSync } from 'fs'

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
 * Runs `fn` with process.env replaced by a copy in which the private variables can still be read
 * (@actions/cache's client reads ACTIONS_RUNTIME_TOKEN from it at each request) but are not
 * enumerable: a library that starts a child with process.env, or with a spread of it (@actions/cache
 * runs tar, zstd and their version checks with `{...process.env, MSYS}`), cannot hand them on, as
 * Node passes a child only the enumerable ones. The real object is back when `fn` ends. (Nothing in
 * the action sets a variable meanwhile: such a change would end with the copy.)
 */
export async function withPrivateVariablesUnlisted<T>(fn: () => Promise<T>): Promise<T> {
  if (!unlisted) {
    const copy: NodeJS.ProcessEnv = {}
    for (const [k, v] of Object.entries(process.env)) {
      if (isPrivateVariable(k))
        Object.defineProperty(copy, k, { value: v, enumerable: false, writable: true, configurable: true })
      else copy[k] = v
    }
    unlisted = { real: process.env, calls: 0 }
    process.env = copy
  }
  // Overlapping calls share the copy; the last one to end puts the real object back.
  const u = unlisted
  u.calls++
  try {
    return await fn()
  } finally {
    if (--u.calls === 0) {
      process.env = u.real
      unlisted = undefined
    }
  }
}
let unlisted: { real: NodeJS.ProcessEnv; calls: number } | undefined

/**
 * Removes the secret inputs from this process's environment once they are read (into memory):
 * whatever starts a child later without childEnv still cannot hand them on, and their values are
 * blanked in the environment the process started with (see blankStartEnvironment), as are the
 * runtime tokens', which stay in process.env.
 */
export function forgetSecretInputs(names: readonly string[], env: NodeJS.ProcessEnv = process.env): void {
  const variables = names.map(name => `INPUT_${name.replace(/ /g, '_').toUpperCase()}`)
  for (const name of variables) delete env[name]
  if (env !== process.env) return
  // The runtime tokens stay readable here (@actions/cache reads them): set again, each is a copy
  // libc made, so the text where the process started can be blanked all the same.
  const tokens = Object.keys(env).filter(k => isPrivateVariable(k) && !/^INPUT_/i.test(k))
  const values = tokens.map(k => `${env[k]}`)
  tokens.forEach((name, i) => (env[name] = values[i]))
  blankStartEnvironment(variables.concat(tokens))
  // (A libc that kept the text where it was would read blanks now: the values are set once more.)
  tokens.forEach((name, i) => {
    if (env[name] !== values[i]) env[name] = values[i]
  })
}

/**
 * Deleting a variable leaves its text where the kernel put the environment at exec, and
 * /proc/PID/environ shows that block to every process of the runner's user (Nix code evaluated
 * with --impure can read its parent's). So the values of `variables` (no longer referenced: they
 * were deleted first) are overwritten there with spaces, through /proc/self/mem. Linux only;
 * false where that cannot be done (then only the deletion holds).
 */
export function blankStartEnvironment(variables: readonly string[]): boolean {
  try {
    const stat = readFileSync('/proc/self/stat', 'utf8')
    // Fields after the command's name (which may hold spaces): env_start is field 50.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const start = Number(fields[50 - 3])
    const block = readFileSync('/proc/self/environ')
    if (!Number.isSafeInteger(start) || start <= 0) return false
    const fd = openSync('/proc/self/mem', 'r+')
    try {
      let at = 0
      while (at < block.length) {
        const nul = block.indexOf(0, at)
        const end = nul < 0 ? block.length : nul
        const eq = block.indexOf(0x3d, at)
        if (eq > at && eq + 1 < end && variables.includes(block.toString('latin1', at, eq)))
          writeSync(fd, Buffer.alloc(end - eq - 1, 0x20), 0, end - eq - 1, start + eq + 1)
        at = end + 1
      }
    } finally {
      closeSync(fd)
    }
    return true
  } catch {
    return false
  }
}

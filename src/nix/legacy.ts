import { ActionError } from '../errors'
import type { Source } from './source'
import { Evaluation } from './evaluation'
import { assertStorePath } from './store-path'

/** A classic configuration.nix or NixOps network files (everything but a flake). */
export type LegacySource = Exclude<Source, { kind: 'flake' } | { kind: 'plan' }>

/** A `deployment.keys.<name>` entry: a file uploaded outside the Nix store before activation. */
export interface DeploymentKey {
  name: string
  text?: string
  /** A file on the runner, read at deploy time. */
  keyFile?: string
  /** A command run on the runner; its output is the key. */
  keyCommand?: string[]
  destDir: string
  user: string
  group: string
  permissions: string
}

export interface MachineEvaluation extends Evaluation {
  /** The machine's name in the network file ('' for a configuration.nix). */
  name: string
  targetHost?: string
  targetPort?: number
  targetUser?: string
  keys: DeploymentKey[]
  /** NixOps options set in the file that a plain SSH deploy does not use (e.g. deployment.ec2). */
  ignored: string[]
  /** deployment.tags (network files). */
  tags?: string[]
}

export interface RawMachine {
  drv: string
  out: string
  buildSystem: string
  hostSystem: string
  targetHost?: string | null
  targetPort?: number | null
  targetUser?: string | null
  tags?: string[] | null
  keys?: Record<
    string,
    {
      text: string | null
      keyFile: string | null
      keyCommand: string[] | null
      destDir: string
      user: string
      group: string
      permissions: string
    }
  >
  ignored?: string[]
}

export function parseMachine(name: string, m: RawMachine): MachineEvaluation {
  const keys = Object.entries(m.keys ?? {}).map(([keyName, k]) => ({
    name: keyName,
    text: k.text ?? undefined,
    keyFile: k.keyFile ?? undefined,
    keyCommand: k.keyCommand ?? undefined,
    destDir: k.destDir,
    user: k.user,
    group: k.group,
    permissions: k.permissions
  }))
  return {
    name,
    drvPath: assertStorePath(m.drv, `${name || 'configuration'} toplevel drvPath`),
    outPath: assertStorePath(m.out, `${name || 'configuration'} toplevel outPath`),
    buildSystem: String(m.buildSystem),
    hostSystem: String(m.hostSystem),
    targetHost: m.targetHost ?? undefined,
    targetPort: m.targetPort ?? undefined,
    targetUser: m.targetUser ?? undefined,
    keys,
    ignored: m.ignored ?? [],
    tags: m.tags && m.tags.length > 0 ? m.tags.map(String) : undefined
  }
}

/** A glob (`*`, `?`, `[…]`) as an anchored regular expression. */
export function globToRegExp(glob: string): RegExp {
  let re = ''
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]
    if (c === '*') re += '.*'
    else if (c === '?') re += '.'
    else if (c === '[') {
      const end = glob.indexOf(']', i + 1)
      if (end < 0) re += '\\['
      else {
        re += `[${glob.slice(i + 1, end).replace(/\\/g, '\\\\')}]`
        i = end
      }
    } else re += c.replace(/[.+^${}()|\\\]]/g, '\\$&')
  }
  return new RegExp(`^${re}$`)
}

/**
 * The machines to deploy: all when no pattern is given, else those matching any name, glob or
 * `@tag` (a machine whose deployment.tags has it). A pattern that matches nothing is an error (a
 * typo would otherwise deploy less than meant). `tags` is needed only when a pattern is a tag.
 */
export function selectMachines(
  names: string[],
  patterns: string[],
  tags: Record<string, string[]> = {}
): string[] {
  if (names.length === 0)
    throw new ActionError(
      'the network files define no machines',
      'A network file is an attribute set of machines (plus network, defaults); check the files given in network.',
      'inputs'
    )
  if (patterns.length === 0) return names
  const matches = (p: string, n: string): boolean =>
    p.startsWith('@') ? (tags[n] ?? []).includes(p.slice(1)) : globToRegExp(p).test(n)
  const unmatched = patterns.filter(p => !names.some(n => matches(p, n)))
  if (unmatched.length > 0) {
    const known = [...new Set(Object.values(tags).flat())].sort()
    throw new ActionError(
      `machines: ${unmatched.map(p => JSON.stringify(p)).join(', ')} ${unmatched.length > 1 ? 'match' : 'matches'} no machine of the network`,
      `The network defines: ${names.join(', ')}.${unmatched.some(p => p.startsWith('@')) ? ` Tags (deployment.tags): ${known.length > 0 ? known.map(t => `@${t}`).join(', ') : 'none'}.` : ''}`,
      'inputs'
    )
  }
  return names.filter(n => patterns.some(p => matches(p, n)))
}

/** What is wrong with a deployment key (empty when it can be uploaded). */
export function keyProblems(machine: string, k: DeploymentKey): string[] {
  const where = `${machine}: deployment.keys.${k.name}`
  const problems: string[] = []
  if (!/^[A-Za-z0-9_][A-Za-z0-9._-]*$/.test(k.name))
    problems.push(`${where}: the key name must be a file name (letters, digits, ., _, -)`)
  if (!/^\/[A-Za-z0-9._/-]*$/.test(k.destDir) || k.destDir.split('/').includes('..'))
    problems.push(`${where}.destDir: ${JSON.stringify(k.destDir)} is not an absolute path without ".."`)
  for (const [field, v] of [
    ['user', k.user],
    ['group', k.group]
  ] as const)
    if (!/^([a-z_][a-z0-9_-]*\$?|[0-9]+)$/.test(v))
      problems.push(`${where}.${field}: ${JSON.stringify(v)} is not a user or group name`)
  if (!/^0?[0-7]{3}$/.test(k.permissions))
    problems.push(`${where}.permissions: ${JSON.stringify(k.permissions)} is not an octal mode like 0600`)
  const sources = [k.text !== undefined, k.keyFile !== undefined, k.keyCommand !== undefined].filter(Boolean)
  if (sources.length !== 1) problems.push(`${where}: set exactly one of text, keyFile, keyCommand`)
  return problems
}

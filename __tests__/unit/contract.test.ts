import * as fs from 'fs'
import * as path from 'path'
import { parse } from 'yaml'
import { COMPRESSIONS } from '../../src/deploy/compression'
import { REBOOT_WHENS } from '../../src/deploy/reboot'
import { INPUT_NAMES, InputName, MODES, readInputs } from '../../src/inputs'
import { base } from './read-inputs'

/**
 * action.yml is the contract editors and the Marketplace read, docs/inputs.md's tables the one
 * people read: both name the same inputs and outputs, in the same order, with the same defaults and
 * accepted values, and a declared default means exactly what leaving the input empty means.
 */
const root = path.join(__dirname, '..', '..')
const action = parse(fs.readFileSync(path.join(root, 'action.yml'), 'utf8')) as {
  inputs: Record<string, { description: string; default?: string }>
  outputs: Record<string, { description: string }>
}
const readme = fs.readFileSync(path.join(root, 'docs', 'inputs.md'), 'utf8')

/** The rows of the docs/inputs.md table under a `## heading`: first cell (its `name`) → the other cells. */
function table(heading: string): Array<[string, string[]]> {
  const section = readme.split(`\n## ${heading}\n`)[1].split('\n## ')[0]
  return section
    .split('\n')
    .filter(l => /^\| `[a-z0-9-]+` \|/.test(l))
    .map(l => {
      const cells = l
        .slice(1, -1)
        .split(/(?<!\\)\|/)
        .map(c => c.trim())
      return [cells[0].replace(/`/g, ''), cells.slice(1)]
    })
}

/**
 * Inputs with a default in docs/inputs.md but none in action.yml, and why: the action must tell "not
 * given" from "given as the default" (docs/inputs.md).
 */
const DEFAULT_IN_CODE: Partial<Record<InputName, string>> = {
  machines: 'refused with flake',
  nixpkgs: 'refused with flake',
  system: 'refused with flake',
  'target-port': "with network, a machine's deployment.targetPort applies unless it is given",
  'target-user': "with network, a machine's deployment.targetUser applies unless it is given",
  'jump-host-key': 'ssh-private-key, when not given',
  'magic-rollback': 'on for switch and test',
  'confirm-timeout': 'worked out from health-timeout with health checks',
  'cache-key': 'the platform is known only after evaluation'
}

/** The values an input takes (a default must be one of them; both texts name each). */
const ACCEPTED: Partial<Record<InputName, readonly string[]>> = {
  mode: MODES,
  compression: COMPRESSIONS,
  reboot: REBOOT_WHENS,
  binfmt: ['auto', 'true', 'false'],
  sudo: ['auto', 'true', 'false'],
  rollout: ['all', 'canary']
}

describe('action.yml and docs/inputs.md agree', () => {
  const inputRows = table('Inputs')

  it('on the inputs and outputs, in order', () => {
    expect(Object.keys(action.inputs)).toEqual([...INPUT_NAMES])
    expect(inputRows.map(([name]) => name)).toEqual([...INPUT_NAMES])
    expect(table('Outputs').map(([name]) => name)).toEqual(Object.keys(action.outputs))
  })

  it('on every default: declared in action.yml where it is static, the same in docs/inputs.md', () => {
    for (const [name, [readmeDefault]] of inputRows) {
      const shown = readmeDefault.replace(/^`(.*)`$/, '$1')
      const declared = action.inputs[name].default
      if (declared !== undefined) expect([name, shown]).toEqual([name, declared])
      else if (!(name in DEFAULT_IN_CODE))
        // No default: docs/inputs.md says so, or leaves the cell empty.
        expect([name, shown]).toEqual([name, expect.stringMatching(/^$|^\((none|all)\)$/)])
    }
  })

  it('on the accepted values, and a default is one of them', () => {
    for (const [name, values] of Object.entries(ACCEPTED) as Array<[InputName, readonly string[]]>) {
      const readmeText = inputRows.find(([n]) => n === name)![1][1]
      for (const v of values) {
        expect([name, v, readmeText]).toEqual([name, v, expect.stringContaining(`\`${v}\``)])
        expect([name, v, action.inputs[name].description]).toEqual([
          name,
          v,
          expect.stringMatching(new RegExp(`\\b${v}\\b`))
        ])
      }
      const declared = action.inputs[name].default
      if (declared !== undefined) expect(values).toContain(declared)
    }
  })

  it('a declared default reads as the input left empty', () => {
    const withDefaults = (name: InputName): string =>
      (base as Partial<Record<InputName, string>>)[name] ??
      (name === 'github-token' ? '' : (action.inputs[name].default ?? ''))
    const empty = (name: InputName): string => (base as Partial<Record<InputName, string>>)[name] ?? ''
    expect(readInputs(withDefaults)).toEqual(readInputs(empty))
    // The same with health checks and a reboot (whose defaults interact with the timeouts).
    const more = { 'health-checks': 'true', reboot: 'auto' } as Partial<Record<InputName, string>>
    expect(readInputs(n => more[n] ?? withDefaults(n))).toEqual(readInputs(n => more[n] ?? empty(n)))
  })
})

import { globToRegExp, keyProblems, selectMachines } from '../../src/nix/legacy'
import { LEGACY_EVAL_NIX } from '../../src/nix/legacy-eval.generated'
import { UPLOAD_KEY_SCRIPT } from '../../src/target/scripts'
import { execFileSync } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'

describe('machine selection (machines: names or globs)', () => {
  const names = ['pi3', 'pi3b', 'nas', 'pi-kitchen']
  it('selects all by default, and by name or glob otherwise, in the file order', () => {
    expect(selectMachines(names, [])).toEqual(names)
    expect(selectMachines(names, ['nas'])).toEqual(['nas'])
    expect(selectMachines(names, ['pi*'])).toEqual(['pi3', 'pi3b', 'pi-kitchen'])
    expect(selectMachines(names, ['pi3?', 'nas'])).toEqual(['pi3b', 'nas'])
    expect(selectMachines(names, ['pi[0-9]'])).toEqual(['pi3'])
  })
  it('a pattern that matches nothing is an error naming the machines there are', () => {
    expect(() => selectMachines(names, ['pi4', 'nas'])).toThrow(/machines: "pi4" matches no machine.*/)
    try {
      selectMachines(names, ['pi4'])
    } catch (e) {
      expect((e as { hint: string }).hint).toBe('The network defines: pi3, pi3b, nas, pi-kitchen.')
    }
    expect(() => selectMachines([], [])).toThrow(/define no machines/)
  })
  it('selects by @tag (deployment.tags); a tag that matches nothing is an error naming the tags there are', () => {
    const tags = { pi3: ['edge', 'rack1'], pi3b: ['edge'], nas: [] }
    expect(selectMachines(names, ['@edge'], tags)).toEqual(['pi3', 'pi3b'])
    expect(selectMachines(names, ['@rack1', 'nas'], tags)).toEqual(['pi3', 'nas'])
    // A tag is not a glob, and a name is not a tag.
    expect(() => selectMachines(names, ['@pi3'], tags)).toThrow(/machines: "@pi3" matches no machine/)
    try {
      selectMachines(names, ['@rack2'], tags)
    } catch (e) {
      expect((e as { hint: string }).hint).toBe(
        'The network defines: pi3, pi3b, nas, pi-kitchen. Tags (deployment.tags): @edge, @rack1.'
      )
    }
  })
  it('globs treat regular-expression characters literally', () => {
    expect(globToRegExp('a.b').test('axb')).toBe(false)
    expect(globToRegExp('a.b').test('a.b')).toBe(true)
    expect(globToRegExp('(x)+').test('(x)+')).toBe(true)
  })
})

describe('deployment.keys checks', () => {
  const key = {
    name: 'wifi',
    text: 's3cret',
    destDir: '/run/keys',
    user: 'root',
    group: 'keys',
    permissions: '0640'
  }
  it('accepts what NixOps accepted', () => {
    expect(keyProblems('pi3', key)).toEqual([])
    expect(keyProblems('pi3', { ...key, text: undefined, keyFile: '/secrets/wifi' })).toEqual([])
    expect(keyProblems('pi3', { ...key, permissions: '600', user: '1000' })).toEqual([])
  })
  it('refuses names and paths that could escape the directory or inject, and ambiguous sources', () => {
    expect(keyProblems('pi3', { ...key, name: '../etc/shadow' })[0]).toMatch(
      /pi3: deployment.keys.\.\.\/etc\/shadow: the key name must be a file name/
    )
    expect(keyProblems('pi3', { ...key, destDir: '/run/../etc' })[0]).toMatch(/destDir/)
    expect(keyProblems('pi3', { ...key, destDir: 'run/keys' })[0]).toMatch(/destDir/)
    expect(keyProblems('pi3', { ...key, user: 'root; reboot' })[0]).toMatch(
      /user: .* is not a user or group name/
    )
    expect(keyProblems('pi3', { ...key, permissions: '0777 x' })[0]).toMatch(/permissions/)
    expect(keyProblems('pi3', { ...key, keyFile: '/x' })).toEqual([
      'pi3: deployment.keys.wifi: set exactly one of text, keyFile, keyCommand'
    ])
  })
  it('the upload script is valid sh and writes the key with its owner and mode, atomically', () => {
    execFileSync('sh', ['-n', '-c', UPLOAD_KEY_SCRIPT])
    const dir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'nda-keys-')), 'keys')
    const me = os.userInfo()
    execFileSync('sh', ['-c', UPLOAD_KEY_SCRIPT, 'sh', dir, 'wifi', String(me.uid), String(me.gid), '0640'], {
      input: 'line one\nline $(two)\n'
    })
    expect(fs.readFileSync(path.join(dir, 'wifi'), 'utf8')).toBe('line one\nline $(two)\n')
    expect(fs.statSync(path.join(dir, 'wifi')).mode & 0o777).toBe(0o640)
    expect(fs.statSync(dir).mode & 0o777).toBe(0o750)
    expect(fs.readdirSync(dir)).toEqual(['wifi'])
  })
})

describe('the evaluation expression', () => {
  it('splices no argument into Nix code: everything comes through argsJson', () => {
    // After its comment lines: a function of argsJson alone.
    expect(LEGACY_EVAL_NIX.replace(/^(#.*\n)*/, '').startsWith('{ argsJson }:')).toBe(true)
    expect(LEGACY_EVAL_NIX).toContain('builtins.fromJSON argsJson')
    // Only nixpkgs' public entry points.
    const imports = [...LEGACY_EVAL_NIX.matchAll(/import \(nixpkgs \+ "([^"]+)"\)/g)].map(m => m[1]).sort()
    expect(imports).toEqual(['/nixos', '/nixos/lib/eval-config.nix'])
  })
})

describe('deployment.keys content', () => {
  const { keyContent } =
    require('../../src/deploy/deployment-keys') as typeof import('../../src/deploy/deployment-keys')
  const key = { name: 'k', destDir: '/run/keys', user: 'root', group: 'root', permissions: '0600' }
  it('comes from text, a file on the runner, or a command run without a shell', async () => {
    expect(await keyContent({ ...key, text: 'inline' })).toBe('inline')
    const f = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'nda-key-')), 'secret')
    fs.writeFileSync(f, 'from a file\n')
    expect(await keyContent({ ...key, keyFile: f })).toBe('from a file\n')
    expect(await keyContent({ ...key, keyCommand: ['printf', '%s', 'a; echo injected'] })).toBe(
      'a; echo injected'
    )
    await expect(keyContent({ ...key, keyCommand: ['false'] })).rejects.toThrow(/keyCommand false failed/)
  })
})

describe("a network machine's target", () => {
  const { machineTarget } = require('../../src/plan') as typeof import('../../src/plan')
  const { readInputs } = require('../../src/inputs') as typeof import('../../src/inputs')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-net-'))
  fs.writeFileSync(path.join(dir, 'rpi.nix'), '{}')
  const machine = (extra: object) => ({
    name: 'pi3',
    drvPath: '/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x.drv',
    outPath: '/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x',
    buildSystem: 'aarch64-linux',
    hostSystem: 'aarch64-linux',
    keys: [],
    ignored: [],
    ...extra
  })
  const inputs = (values: Record<string, string>) =>
    readInputs(
      n =>
        (
          ({
            network: path.join(dir, 'rpi.nix'),
            mode: 'build', // no key needed to plan; the target is worked out all the same
            ...values
          }) as Record<string, string>
        )[n] ?? ''
    )
  it('comes from the file (targetHost defaults to the name), inputs override it for one machine', () => {
    expect(machineTarget(inputs({}), machine({}))).toEqual({
      host: 'pi3',
      port: undefined,
      user: undefined
    })
    expect(
      machineTarget(inputs({}), machine({ targetHost: '10.0.0.5', targetPort: 2222, targetUser: 'admin' }))
    ).toEqual({ host: '10.0.0.5', port: 2222, user: 'admin' })
    expect(
      machineTarget(
        inputs({ 'target-user': 'deploy' }),
        machine({ targetHost: '10.0.0.5', targetPort: 2222 })
      )
    ).toEqual({ host: '10.0.0.5', port: 2222, user: 'deploy' })
    expect(machineTarget(inputs({ 'target-host': 'lan-pi' }), machine({ targetHost: '10.0.0.5' })).host).toBe(
      'lan-pi'
    )
  })
  it('refuses file values that are not a host, port or user (no injection through the file)', () => {
    expect(() => machineTarget(inputs({}), machine({ targetHost: 'pi; reboot' }))).toThrow(
      /deployment.targetHost/
    )
    expect(() => machineTarget(inputs({}), machine({ targetPort: 70000 }))).toThrow(
      /pi3: deployment.targetPort 70000 is not a port/
    )
    expect(() => machineTarget(inputs({}), machine({ targetUser: 'root -oProxyCommand=x' }))).toThrow(
      /deployment.targetUser/
    )
  })
})

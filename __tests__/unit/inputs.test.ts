import { sshKeyPair } from './ssh-keys'
import { InputError } from '../../src/errors'
import { INPUT_NAMES, InputName } from '../../src/inputs'
import { parseHostAddress } from '../../src/ssh/address'
import { splitPrivateKeys } from '../../src/ssh/endpoint'
import { parseFlakeTarget } from '../../src/nix/flake'
import { base, hostLine, inputs, key } from './read-inputs'

/** A passphrase-protected key (one ssh2 reads back: sshKeyPair). */
const encrypted = sshKeyPair('ed25519', { passphrase: 'sesame', cipher: 'aes256-ctr', rounds: 16 })

function problems(values: Partial<Record<InputName, string>>): string[] {
  try {
    inputs(values)
  } catch (e) {
    expect(e).toBeInstanceOf(InputError)
    return (e as InputError).problems
  }
  throw new Error('expected an InputError')
}

describe('parseFlakeTarget', () => {
  it('reads ref#name as nixosConfigurations.name, quoting the name', () => {
    expect(parseFlakeTarget('.#pi3')).toEqual({
      ref: '.',
      name: 'pi3',
      installable: '.#nixosConfigurations."pi3"'
    })
    expect(parseFlakeTarget('github:me/pi?dir=sys#pi.lan').installable).toBe(
      'github:me/pi?dir=sys#nixosConfigurations."pi.lan"'
    )
  })
  it.each(['.', '.#', '#pi', '.#a"b', '.#$(id)', '-x#pi', '.#a b'])('rejects %j with a message', s => {
    expect(() => parseFlakeTarget(s)).toThrow(/flake/)
  })
})

describe('parseHostAddress', () => {
  it.each([
    ['pi', { host: 'pi' }],
    ['deploy@bastion.example.org:2222', { user: 'deploy', host: 'bastion.example.org', port: 2222 }],
    ['[fe80::1]:22', { host: 'fe80::1', port: 22 }],
    ['u@[2001:db8::2]', { user: 'u', host: '2001:db8::2' }],
    ['2001:db8::2', { host: '2001:db8::2' }],
    ['10.0.0.1', { host: '10.0.0.1' }]
  ])('parses %j', (s, expected) => {
    expect(parseHostAddress(s, 'x')).toEqual({ user: undefined, port: undefined, ...expected })
  })
  it.each([
    '-oProxyCommand=id',
    'pi;id',
    'pi:0',
    'pi:99999',
    '[::1',
    '[pi]:22',
    'a b',
    '$(id)@pi',
    'pi:',
    ''
  ])('rejects %j', s => {
    expect(() => parseHostAddress(s, 'jump-host')).toThrow(/jump-host/)
  })
})

describe('readInputs', () => {
  it('reads a full deploy with defaults left unset', () => {
    const i = inputs({
      ...base,
      'jump-host': 'deploy@bastion:2222',
      'nix-options': 'substituters =\n# comment\nmax-jobs = 2'
    })
    expect(i.mode).toBe('switch')
    expect(i.target).toEqual({ host: '192.168.1.20', user: undefined, port: undefined })
    expect(i.jumpHosts).toEqual([{ user: 'deploy', host: 'bastion', port: 2222 }])
    expect(i.nixOptions).toEqual([
      ['substituters', ''],
      ['max-jobs', '2']
    ])
    expect(i.binfmt).toBe('auto')
    expect(i.connectTimeoutSeconds).toBe(30)
  })
  it('reports every problem at once', () => {
    const p = problems({
      mode: 'yolo',
      binfmt: 'maybe',
      'target-port': '70000',
      'nix-options': 'not an option'
    })
    expect(p).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^flake is required/),
        expect.stringMatching(/^mode: "yolo" is not one of switch, boot, test, dry-activate, build/),
        expect.stringMatching(/^binfmt:/),
        expect.stringMatching(/^target-port:/),
        expect.stringMatching(/^nix-options line 1:/)
      ])
    )
  })
  it('needs a host and a key to deploy, but nothing to build', () => {
    expect(problems({ flake: '.#pi3' })).toEqual([
      expect.stringMatching(/^target-host is required for mode switch/),
      expect.stringMatching(/^ssh-private-key is required for mode switch/)
    ])
    expect(inputs({ flake: '.#pi3', mode: 'build' }).mode).toBe('build')
  })
  it('requires known-hosts unless host key checking is explicitly off', () => {
    expect(problems({ ...base, 'known-hosts': '' })).toEqual([
      expect.stringMatching(/^known-hosts is required/)
    ])
    expect(
      inputs({ ...base, 'known-hosts': '', 'insecure-skip-host-key-check': 'true' }).insecureSkipHostKeyCheck
    ).toBe(true)
  })
  it('explains key problems without echoing the key', () => {
    const garbage = 'not a key but a secret-ish string'
    const [p] = problems({ ...base, 'ssh-private-key': garbage })
    expect(p).toMatch(/^ssh-private-key: not a private key/)
    expect(p).not.toContain(garbage)
    expect(problems({ ...base, 'ssh-private-key': encrypted.private })).toEqual([
      expect.stringMatching(/the key is encrypted; set ssh-key-passphrase/)
    ])
    expect(
      problems({ ...base, 'ssh-private-key': encrypted.private, 'ssh-key-passphrase': 'wrong' })
    ).toEqual([expect.stringMatching(/could not decrypt the key with ssh-key-passphrase/)])
    expect(
      inputs({ ...base, 'ssh-private-key': encrypted.private, 'ssh-key-passphrase': 'sesame' }).sshKey
        ?.passphrase
    ).toBe('sesame')
  })
  it('rejects contradictions and orphans', () => {
    expect(problems({ ...base, 'target-host': 'admin@pi', 'target-user': 'root' })).toEqual([
      expect.stringMatching(/contradicts/)
    ])
    expect(problems({ flake: '.#pi3', mode: 'build', 'jump-host': 'bastion' })).toEqual([
      'jump-host is set but target-host is empty'
    ])
    expect(problems({ ...base, 'jump-host-key': key.private })).toEqual([
      'jump-host-key is set but jump-host is empty'
    ])
  })
  it('reads jump-host as a chain (commas or lines) and names the hop that is wrong', () => {
    expect(inputs({ ...base, 'jump-host': 'a,\n ops@b:2200 ,[fd00::1]' }).jumpHosts).toEqual([
      { user: undefined, host: 'a', port: undefined },
      { user: 'ops', host: 'b', port: 2200 },
      { user: undefined, host: 'fd00::1', port: undefined }
    ])
    expect(problems({ ...base, 'jump-host': 'a, b;touch /tmp/x' })).toEqual([
      'jump-host (hop 2): "b;touch /tmp/x" is not a host name or IP address'
    ])
    expect(problems({ ...base, 'jump-host': 'a, $(id)@b' })).toEqual([
      'jump-host (hop 2): "$(id)" is not a valid user name'
    ])
    expect(
      problems({ ...base, 'jump-host': Array.from({ length: 9 }, (_, n) => `h${n}`).join(',') })
    ).toEqual(['jump-host: 9 hops; at most 8 are supported'])
  })
  it('reads several keys in jump-host-key: one for all hops or one per hop, each checked', () => {
    const two = `${key.private}\n${encrypted.private}`
    const i = inputs({ ...base, 'jump-host': 'a,b', 'jump-host-key': two, 'ssh-key-passphrase': 'sesame' })
    expect(i.jumpHostKeys.map(k => k.text)).toEqual([key.private.trim(), encrypted.private.trim()])
    expect(
      problems({ ...base, 'jump-host': 'a,b,c', 'jump-host-key': two, 'ssh-key-passphrase': 'sesame' })
    ).toEqual([
      'jump-host-key holds 2 keys but jump-host has 3 hops: give one key for all hops, or one key per hop in the order of jump-host'
    ])
    // The key that does not parse is named by its place.
    expect(problems({ ...base, 'jump-host': 'a,b', 'jump-host-key': two })).toEqual([
      'jump-host-key (key 2 of 2): the key is encrypted; set ssh-key-passphrase (from a secret) or use an unencrypted deploy key'
    ])
  })
  it('declares the same inputs as action.yml', () => {
    const fs = require('fs') as typeof import('fs')
    const yml = fs.readFileSync(require.resolve('../../action.yml'), 'utf8')
    const declared = [...yml.split('outputs:')[0].matchAll(/^ {2}([a-z0-9-]+):$/gm)].map(m => m[1])
    expect(declared).toEqual([...INPUT_NAMES])
  })
})

describe('nix-options', () => {
  it('refuses a secret setting (access-tokens, extra-access-tokens) without echoing its value, pointing to github-token', () => {
    for (const name of ['access-tokens', 'extra-access-tokens']) {
      const found = problems({
        ...base,
        'nix-options': `substituters =\n${name} = github.com=ghp_s3cr3tvalue`
      })
      expect(found).toEqual([
        expect.stringMatching(new RegExp(`^nix-options line 2: ${name} holds a secret.*github-token`))
      ])
      expect(found.join('\n')).not.toContain('ghp_s3cr3tvalue')
    }
    expect(inputs({ ...base, 'nix-options': 'substituters =' }).nixOptions).toEqual([['substituters', '']])
  })
})

describe('safety inputs', () => {
  it('requires reboot-timeout to exceed connect-timeout when a reboot may happen', () => {
    expect(problems({ ...base, reboot: 'auto', 'reboot-timeout': '20', 'connect-timeout': '30' })).toEqual([
      expect.stringMatching(/^reboot-timeout \(20 s\) must be longer than connect-timeout \(30 s\)/)
    ])
    expect(() =>
      inputs({ ...base, reboot: 'auto', 'reboot-timeout': '20', 'connect-timeout': '10' })
    ).not.toThrow()
    expect(() => inputs({ ...base, reboot: 'never', 'reboot-timeout': '20' })).not.toThrow()
  })
  it('requires confirm-timeout to exceed health-timeout when both apply', () => {
    expect(
      problems({ ...base, 'health-checks': 'true', 'health-timeout': '60', 'confirm-timeout': '30' })
    ).toEqual([
      expect.stringMatching(/^confirm-timeout \(30 s\) must be longer than health-timeout \(60 s\)/)
    ])
    expect(
      inputs({ ...base, 'health-checks': 'true', 'health-timeout': '60', 'confirm-timeout': '90' })
        .healthChecks
    ).toEqual(['true'])
    // Defaults are valid together: health-checks alone works, the window derived from health-timeout
    // and connect-timeout (checks, then a new connection through both hops).
    expect(() => inputs({ ...base, 'health-checks': 'true' })).not.toThrow()
    expect(inputs({ ...base, 'health-checks': 'true' }).confirmTimeoutSeconds).toBe(60 + 2 * 30 + 30)
    expect(
      inputs({ ...base, 'health-checks': 'true', 'health-timeout': '5', 'connect-timeout': '5' })
        .confirmTimeoutSeconds
    ).toBe(45)
    expect(inputs({ ...base }).confirmTimeoutSeconds).toBe(30)
    // A confirm-timeout the user set against the default health-timeout (which action.yml declares,
    // so the runner passes it as if given): the error names it.
    expect(problems({ ...base, 'health-checks': 'true', 'confirm-timeout': '30' })).toEqual([
      expect.stringMatching(/^confirm-timeout \(30 s\) must be longer than health-timeout \(60 s\)/)
    ])
    // Without magic rollback the target does not wait for a confirmation: no constraint.
    expect(inputs({ ...base, 'health-checks': 'true', 'magic-rollback': 'false' }).magicRollback).toBe(false)
  })
  it('reads reboot (never by default) and refuses it with modes that do not set what boots', () => {
    expect(inputs(base)).toMatchObject({ reboot: 'never', rebootTimeoutSeconds: 300 })
    expect(inputs({ ...base, reboot: 'auto', 'reboot-timeout': '120' })).toMatchObject({
      reboot: 'auto',
      rebootTimeoutSeconds: 120
    })
    expect(inputs({ ...base, mode: 'boot', reboot: 'always' }).reboot).toBe('always')
    expect(problems({ ...base, mode: 'test', reboot: 'auto' })).toEqual([
      expect.stringMatching(/^reboot: auto cannot be used with mode test: .* Use mode switch or boot/)
    ])
    expect(problems({ ...base, mode: 'dry-activate', reboot: 'always' })).toEqual([
      expect.stringMatching(/^reboot: always cannot be used with mode dry-activate/)
    ])
    expect(problems({ ...base, reboot: 'sometimes' })).toEqual([
      'reboot: "sometimes" is not one of never, auto, always'
    ])
  })
  it('rejects bad numbers', () => {
    expect(problems({ ...base, 'keep-generations': '0', 'lock-timeout': 'soon' })).toEqual([
      expect.stringMatching(/^lock-timeout:/),
      expect.stringMatching(/^keep-generations:/)
    ])
  })
})

describe('configuration and network sources', () => {
  const fs = require('fs') as typeof import('fs')
  const os = require('os') as typeof import('os')
  const path = require('path') as typeof import('path')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-src-'))
  fs.mkdirSync(path.join(dir, 'nixpkgs', 'nixos', 'lib'), { recursive: true })
  fs.writeFileSync(path.join(dir, 'nixpkgs', 'nixos', 'lib', 'eval-config.nix'), '{}')
  fs.writeFileSync(path.join(dir, 'rpi.nix'), '{}')
  fs.writeFileSync(path.join(dir, 'lan.nix'), '{}')
  fs.writeFileSync(path.join(dir, 'configuration.nix'), '{}')
  const conn = { 'ssh-private-key': key.private, 'known-hosts': hostLine }
  beforeAll(() => (process.env.GITHUB_WORKSPACE = dir))
  afterAll(() => delete process.env.GITHUB_WORKSPACE)

  it('reads a network (paths relative to the workspace), machines, nixpkgs and system', () => {
    const i = inputs({ ...conn, network: 'rpi.nix\nlan.nix', machines: 'pi3, pi*', nixpkgs: './nixpkgs' })
    expect(i.source).toEqual({
      kind: 'network',
      networks: [path.join(dir, 'rpi.nix'), path.join(dir, 'lan.nix')],
      nixpkgs: path.join(dir, 'nixpkgs'),
      system: 'aarch64-linux',
      machines: ['pi3', 'pi*'],
      label: 'rpi.nix lan.nix'
    })
    expect(i).toMatchObject({ parallel: 4, failFast: false, target: undefined })
    // No target-host needed: the file gives each machine its host.
    expect(inputs({ ...conn, network: 'rpi.nix', 'jump-host': 'bastion' }).jumpHosts[0].host).toBe('bastion')
  })
  it('reads a configuration.nix with <nixpkgs> and another system', () => {
    expect(
      inputs({ ...conn, configuration: 'configuration.nix', system: 'armv7l-linux', 'target-host': 'pi' })
        .source
    ).toEqual({
      kind: 'configuration',
      configuration: path.join(dir, 'configuration.nix'),
      nixpkgs: '<nixpkgs>',
      system: 'armv7l-linux',
      label: 'configuration.nix'
    })
  })
  it('refuses unclear sources, missing files, a nixpkgs without NixOS, bad parallel and machines', () => {
    expect(problems({ ...conn, flake: '.#pi3', network: 'rpi.nix', 'target-host': 'pi' })).toEqual([
      'set only one of flake, configuration, network, deploy-plan (got flake, network)'
    ])
    expect(problems({ ...conn })[0]).toMatch(/^flake is required: .*or network: for NixOps network files/)
    expect(problems({ ...conn, network: 'nope.nix' })[0]).toMatch(/^network: "nope.nix" does not exist/)
    expect(problems({ ...conn, network: 'rpi.nix', nixpkgs: '.' })[0]).toMatch(
      /^nixpkgs: "\." is not a nixpkgs checkout \(no nixos\/lib\/eval-config.nix/
    )
    expect(problems({ ...conn, network: 'rpi.nix', machines: 'pi3;reboot' })[0]).toMatch(
      /^machines: "pi3;reboot" is not a machine name, glob .* or @tag/
    )
    expect(problems({ ...conn, network: 'rpi.nix', machines: '@edge;reboot' })[0]).toMatch(
      /^machines: "@edge;reboot" is not a machine name, glob .* or @tag/
    )
    expect(inputs({ ...conn, network: 'rpi.nix', machines: '@edge pi3' }).source).toMatchObject({
      machines: ['@edge', 'pi3']
    })
    expect(problems({ ...conn, network: 'rpi.nix', parallel: '0' })).toEqual([
      'parallel: "0" is not a whole number from 1 to 64'
    ])
    expect(problems({ ...base, nixpkgs: './nixpkgs' })).toEqual([
      'nixpkgs is only used with configuration or network, not with flake'
    ])
    expect(problems({ ...conn, configuration: 'configuration.nix' })[0]).toMatch(/^target-host is required/)
  })
})

describe('splitPrivateKeys', () => {
  it('splits OpenSSH, PEM and PuTTY keys pasted one after another, in order', () => {
    const openssh = '-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----'
    const pem = '-----BEGIN RSA PRIVATE KEY-----\nBBBB\n-----END RSA PRIVATE KEY-----'
    const ppk = 'PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nPrivate-MAC: cc'
    expect(splitPrivateKeys(`\n${openssh}\r\n\n${pem}\n${ppk}\n`)).toEqual([openssh, pem, ppk])
    expect(splitPrivateKeys(openssh)).toEqual([openssh])
    // Text before the first key is a "key" of its own, which the key parser then refuses by name.
    expect(splitPrivateKeys(`not a key\n${openssh}`)).toEqual(['not a key', openssh])
  })
})

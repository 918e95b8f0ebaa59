import * as path from 'path'
import { deployInputs, describeE2E, onPi, piExec, piState, resetPi, runAction, testbed } from './harness'

/**
 * Secrets never reach a child process or a file someone else controls: Nix code and keyCommands
 * run without the action's inputs and tokens in their environment, and a key is written only into
 * a directory no one but root can change.
 */
describeE2E('secrets: child environments and key directories', () => {
  const fixture = (...p: string[]): string => path.join(testbed().TESTBED, 'fixture', ...p)
  const networkInputs = (file: string): Record<string, string> => {
    const { flake: _flake, ...rest } = deployInputs('unused')
    return { ...rest, 'target-host': '', nixpkgs: fixture('nixpkgs'), network: fixture('network', file) }
  }
  beforeAll(() => resetPi(), 300_000)

  it('Nix code (builtins.getEnv) and a keyCommand see none of the secret inputs or tokens', async () => {
    const inputs: Record<string, string> = networkInputs('env-probe.nix')
    const token = 'fake-runtime-token-0123456789abcdef'
    const run = await runAction(inputs, {
      env: { ACTIONS_RUNTIME_TOKEN: token, ACTIONS_ID_TOKEN_REQUEST_TOKEN: `${token}-id` }
    })
    if (run.exitCode !== 0) console.log(run.log)
    expect(run.exitCode).toBe(0)
    // Every name read as empty.
    expect(onPi('cat /run/keys/getenv')).toBe('probe:||||')
    const env = onPi('cat /run/keys/environment')
    expect(env).toMatch(/^PATH=/m)
    expect(env).not.toMatch(/^INPUT_/m)
    expect(env).not.toContain(token)
    for (const line of inputs['ssh-private-key'].split('\n').filter(l => l.length > 20))
      expect(env).not.toContain(line)
  }, 300_000)

  // Each directory is prepared on the Pi as an attacker (an unprivileged user) could leave it.
  const unsafe: Array<[string, string, RegExp, string?]> = [
    [
      'a symlink to a directory an unprivileged user owns',
      'mkdir -p /run/nda-stolen && chown nda-nosudo /run/nda-stolen && ln -sfn /run/nda-stolen /run/nda-keys',
      /is a symlink or not a directory/
    ],
    [
      'a directory an unprivileged user owns, with a planted link',
      'mkdir -p /run/nda-keys && chown nda-nosudo /run/nda-keys && runuser -u nda-nosudo -- ln -s /run/nda-stolen-file /run/nda-keys/wifi',
      /is owned by uid [0-9]+, not root/
    ],
    [
      'a directory anyone can write to',
      'mkdir -p /run/nda-keys && chmod 1777 /run/nda-keys',
      /is writable by group or others \(mode 1777\)/
    ],
    [
      "root's own, inside a directory an unprivileged user owns (who could swap it after the check)",
      'mkdir -p /run/nda-stolen/keys && chmod 0750 /run/nda-stolen/keys && chown nda-nosudo /run/nda-stolen',
      /\/run\/nda-stolen is owned by uid [0-9]+, not root/,
      '/run/nda-stolen/keys'
    ]
  ]
  it.each(unsafe)(
    'a key destDir that is %s is refused; nothing is written, nothing activated',
    async (_what, prepare, why, dir = '/run/nda-keys') => {
      piExec(['sh', '-c', 'rm -rf /run/nda-keys /run/nda-stolen /run/nda-stolen-file'])
      piExec(['sh', '-c', prepare])
      const before = piState()
      const run = await runAction(networkInputs('key-dir.nix'), {
        env: { NDA_KEY_DIR: dir },
        secrets: ['key-dir-wifi-secret-6402']
      })
      expect(run.exitCode).not.toBe(0)
      expect(run.outputs.result).toBe('failed')
      expect(run.log).toMatch(/deployment\.keys\.wifi: refusing to write it on target root@10\.99\.2\.2/)
      expect(run.log).toMatch(why)
      expect(piExec(['sh', '-c', 'grep -rl key-dir-wifi-secret /run 2>/dev/null | wc -l'])).toBe('0')
      expect(piState()).toEqual(before)
    },
    300_000
  )

  it("a link planted at the key's own name in a safe directory is replaced, never followed", async () => {
    piExec([
      'sh',
      '-c',
      'rm -rf /run/nda-keys /run/nda-victim && mkdir -m 0750 /run/nda-keys && echo original > /run/nda-victim && ln -s /run/nda-victim /run/nda-keys/wifi'
    ])
    const run = await runAction(networkInputs('key-dir.nix'), {
      env: { NDA_KEY_DIR: '/run/nda-keys' },
      secrets: ['key-dir-wifi-secret-6402']
    })
    expect(run.exitCode).toBe(0)
    expect(piExec(['cat', '/run/nda-victim'])).toBe('original')
    expect(
      piExec(['sh', '-c', 'test -L /run/nda-keys/wifi && echo link || stat -c "%U %a" /run/nda-keys/wifi'])
    ).toBe('root 600')
    expect(piExec(['cat', '/run/nda-keys/wifi'])).toBe('key-dir-wifi-secret-6402')
    // No temporary file left beside it.
    expect(piExec(['ls', '-A', '/run/nda-keys'])).toBe('wifi')
  }, 300_000)
})

import * as fs from 'fs'
import { deployInputs, describeE2E, fixturePath, onPi, piState, resetPi, runAction } from './harness'

/**
 * Hostile values in every input that reaches a command: each gives a clear validation error or is used
 * literally, never executed -- on the runner or on the Pi.
 */
const MARK = '/tmp/nda-injected'
const pwn = `touch ${MARK}`
const injected = (): boolean =>
  fs.existsSync(MARK) || onPi(`test -e ${MARK} && echo yes || echo no`) === 'yes'

describeE2E('hostile input is refused or used literally, never executed', () => {
  beforeAll(() => {
    resetPi()
    fixturePath('pi-gen1')
    fs.rmSync(MARK, { force: true })
  }, 300_000)
  afterEach(() => {
    expect(injected()).toBe(false)
  })

  it.each([
    ['target-host', `10.99.2.2;${pwn}`, /target-host: .* is not a host name or IP address/],
    [
      'target-host',
      `$(${pwn})`,
      /target-host: .* is not a valid user name|target-host: .* is not a host name/
    ],
    ['target-host', '-oProxyCommand=sh', /target-host: .* is not a host name or IP address/],
    ['target-host', 'pï.lan', /target-host: .* is not a host name or IP address/],
    ['target-user', `root\`${pwn}\``, /target-user: .* is not a valid user name/],
    ['target-user', 'root\nadmin', /target-user: .* is not a valid user name/],
    ['target-port', '22; reboot', /target-port: .* is not a port/],
    ['jump-host', `-oProxyCommand=${pwn}`, /jump-host: .* is not a host name or IP address/],
    ['jump-host', `'10.99.1.2'`, /jump-host: .* is not a host name or IP address/],
    ['flake', `path:/tmp#$(${pwn})`, /is not a configuration name/],
    ['flake', `--impure#pi`, /must be a flake reference/],
    ['nix-options', `$(${pwn})`, /nix-options line 1: expected "name = value"/],
    ['keep-generations', '1; rm -rf /', /keep-generations: .* is not a whole number/],
    ['diff-against', `/nix/store/x;${pwn}`, /diff-against: .* is not a valid store path/],
    ['sudo', 'yes please', /sudo: .* is not one of auto, true, false/]
  ])(
    '%s = %j',
    async (input, value, message) => {
      const before = piState()
      const run = await runAction(deployInputs('pi-gen1', { [input]: value }))
      expect(run.exitCode).not.toBe(0)
      const annotation = run.log.split('\n').find(l => l.startsWith('::error title='))
      expect(annotation?.replace(/%0A/g, '\n')).toMatch(message)
      expect(piState()).toEqual(before)
    },
    120_000
  )

  it('values that are valid but odd reach their command literally', async () => {
    const run = await runAction(
      deployInputs('pi-gen1', {
        // One setting whose value has spaces and shell characters: one argv element for nix, unparsed.
        'nix-options': "substituters =\nallowed-uris = https://example.org/a'b $(id)",
        // Health checks are the one input meant as shell: quotes and substitutions work as written.
        'health-checks': `test "$(printf '%s' 'a b')" = "a b"\ntest "$(cat /run/current-system/nixos-version)" = gen1`,
        'health-timeout': '10'
      })
    )
    expect(run.exitCode).toBe(0)
    expect(run.outputs.result).toBe('deployed')
  }, 300_000)
})

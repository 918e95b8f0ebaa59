import * as fs from 'fs'
import { LOCK_DIR } from '../../src/target/lock/on-target'
import { shellCommand } from '../../src/ssh/quote'
import {
  ActionRun,
  deployInputs,
  describeE2E,
  fixturePath,
  onPi,
  piState,
  resetPi,
  runAction,
  runnerView
} from './harness'

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

/**
 * What a target (or a pull request's Nix code) writes reaches the log as text: a bare \r, which the
 * runner also takes for a line end, must not start a workflow command there. Each place gets
 * `\r::error title=pwned-<place>::…\r::add-mask::nda-planted-mask`: no such annotation, no such mask,
 * and the text is still shown (escaped), so a test that printed nothing could not pass.
 */
describeE2E('text from the target is shown, never obeyed', () => {
  beforeAll(() => resetPi(), 300_000)
  afterEach(() => {
    onPi(`rm -rf ${LOCK_DIR}`)
  })
  const planted = (place: string): string => `\r::error title=pwned-${place}::x\r::add-mask::nda-planted-mask`
  const expectShownNotObeyed = (run: ActionRun, places: string[]): void => {
    const view = runnerView(run.log)
    expect(
      view.commands.filter(c => /^::(error title=pwned|warning::pwned|add-mask::nda-planted)/.test(c))
    ).toEqual([])
    expect(view.masks).not.toContain('nda-planted-mask')
    const shown = view.shown.join('\n')
    for (const place of places) expect(shown).toContain(`pwned-${place}`)
  }

  it("a lock holder's description", async () => {
    const boot = onPi('cat /proc/sys/kernel/random/boot_id')
    const uptime = Math.floor(Number(onPi('cut -d" " -f1 /proc/uptime')))
    const owner = ['planted-holder', `v2 ${boot} ${uptime + 600}`, `a run of someone else${planted('lock')}`]
    onPi(
      `mkdir -p ${LOCK_DIR} && printf '%s\\n' ${owner.map(l => shellCommand([l])).join(' ')} > ${LOCK_DIR}/owner`
    )
    const before = piState()
    const run = await runAction(deployInputs('pi-gen1', { 'lock-timeout': '3' }))
    expect(run.exitCode).not.toBe(0)
    expect(run.outputs.result).toBe('failed')
    expectShownNotObeyed(run, ['lock'])
    expect(piState()).toEqual(before)
  }, 300_000)

  it("the activation's output (which fails: rolled back), with an evaluation's trace and a build's log that are not shown", async () => {
    const before = piState()
    const run = await runAction(deployInputs('pi-hostile-output'))
    expect(run.outputs.result).toBe('rolled-back')
    // Nix shows a build log only when the build fails: here it must just not be obeyed.
    expectShownNotObeyed(run, ['activation'])
    expect(runnerView(run.log).shown.join('\n')).toContain('pwned-activation-stderr')
    expect(piState()).toEqual(before)
  }, 300_000)

  it('an evaluation error and the log of a build that fails', async () => {
    for (const [config, place] of [
      ['pi-hostile-eval', 'eval'],
      ['pi-hostile-build', 'build']
    ]) {
      const before = piState()
      const run = await runAction(deployInputs(config))
      expect(run.outputs.result).toBe('failed')
      expectShownNotObeyed(run, [place])
      expect(piState()).toEqual(before)
    }
  }, 300_000)

  it("a health check's output (it fails: rolled back)", async () => {
    const before = piState()
    const run = await runAction(
      deployInputs('pi-gen1', {
        'health-checks': `printf '${planted('health').replace(/\r/g, '\\r')}\\n'; exit 1`,
        'health-timeout': '3'
      })
    )
    expect(run.outputs.result).toBe('rolled-back')
    expectShownNotObeyed(run, ['health'])
    expect(piState()).toEqual(before)
  }, 300_000)
})

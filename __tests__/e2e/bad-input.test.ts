import {
  deployInputs,
  describeE2E,
  fixturePath,
  key,
  piState,
  PiState,
  resetPi,
  runAction,
  testbed
} from './harness'

/**
 * Each bad input: a clear error (annotation + summary) naming what is wrong and what to do, a
 * non-zero exit, and the Pi exactly as it was.
 */
describeE2E('bad input fails clearly and leaves the Pi unchanged', () => {
  let before: PiState
  beforeAll(() => {
    resetPi()
    fixturePath('pi-gen1')
    before = piState()
  }, 300_000)
  afterEach(() => {
    expect(piState()).toEqual(before)
  })

  async function expectFailure(
    inputs: Record<string, string>,
    message: RegExp,
    opts: { within?: number } = {}
  ) {
    const run = await runAction(inputs)
    expect(run.exitCode).not.toBe(0)
    expect(run.outputs.result).toBe('failed')
    const annotation = run.log.split('\n').find(l => l.startsWith('::error title='))
    expect(annotation).toMatch(message)
    expect(run.summary.split('\n')[0]).toBe('### nix-deploy-action: ❌ Failed')
    expect(run.summary).toMatch(/\*\*What to do:\*\* \S/)
    if (opts.within) expect(run.ms).toBeLessThan(opts.within)
    return run
  }

  it('missing flake', async () => {
    await expectFailure(deployInputs('pi-gen1', { flake: '' }), /flake is required/)
  })

  it('mode not in the list', async () => {
    await expectFailure(
      deployInputs('pi-gen1', { mode: 'deploy' }),
      /mode: "deploy" is not one of switch, boot, test, dry-activate, build/
    )
  })

  it('a configuration the flake does not have: lists the ones it has', async () => {
    const run = await expectFailure(deployInputs('pi-nope'), /has no nixosConfigurations.pi-nope/)
    expect(run.summary).toMatch(/Use one of: .*#pi-gen1/)
  }, 120_000)

  it("an evaluation error shows Nix's message", async () => {
    await expectFailure(
      deployInputs('pi-eval-error'),
      /evaluating .* failed: fixture: this configuration does not evaluate/
    )
  }, 120_000)

  it('a build failure names the failing derivation and shows its log tail', async () => {
    const run = await expectFailure(
      deployInputs('pi-build-fails'),
      /the builder of \/nix\/store\/\S+-nixos-system-pi3-broken.drv failed/
    )
    expect(run.summary).toContain('fixture: this build fails on purpose')
    expect(run.summary).not.toContain('| connect |')
  }, 300_000)

  it('an unparsable private key', async () => {
    await expectFailure(
      deployInputs('pi-gen1', { 'ssh-private-key': 'hello\nworld' }),
      /ssh-private-key: not a private key/
    )
  })

  it('an encrypted key without a passphrase', async () => {
    await expectFailure(
      deployInputs('pi-gen1', { 'ssh-private-key': key('deploy-encrypted') }),
      /the key is encrypted; set ssh-key-passphrase/
    )
  })

  it('a wrong passphrase', async () => {
    await expectFailure(
      deployInputs('pi-gen1', { 'ssh-private-key': key('deploy-encrypted'), 'ssh-key-passphrase': 'wrong' }),
      /could not decrypt the key with ssh-key-passphrase/
    )
  })

  it("the target's host key is not in known-hosts: prints its fingerprint and the line to add", async () => {
    const t = testbed()
    const jumpOnly = require('fs').readFileSync(t.TESTBED_KNOWN_HOSTS, 'utf8').split('\n')[0]
    const run = await expectFailure(
      deployInputs('pi-gen1', { 'known-hosts': jumpOnly }),
      /host key check failed for target root@10.99.2.2: 10.99.2.2 is not in known-hosts/
    )
    const pub = require('fs').readFileSync(`${t.TESTBED_KEYS}/pi_host_ed25519.pub`, 'utf8').split(' ')
    expect(run.summary).toContain(`10.99.2.2 ssh-ed25519 ${pub[1]}`)
    expect(run.summary).toMatch(/SHA256:[A-Za-z0-9+/]{43}/)
  }, 120_000)

  it("the target's host key does not match (e.g. a man in the middle)", async () => {
    const t = testbed()
    const lines = require('fs').readFileSync(t.TESTBED_KNOWN_HOSTS, 'utf8').split('\n')
    const wrong = require('fs')
      .readFileSync(`${t.TESTBED_KEYS}/jump_host_ed25519.pub`, 'utf8')
      .split(' ')
      .slice(0, 2)
      .join(' ')
    await expectFailure(
      deployInputs('pi-gen1', { 'known-hosts': `${lines[0]}\n10.99.2.2 ${wrong}` }),
      /does not match known-hosts/
    )
  }, 120_000)

  it('the jump host is unreachable: fails within the connect timeout', async () => {
    await expectFailure(
      deployInputs('pi-gen1', { 'jump-host': '10.99.1.77', 'connect-timeout': '5' }),
      /jump host root@10.99.1.77/,
      { within: 90_000 }
    )
  }, 120_000)

  it('the Pi is unreachable behind the jump host: fails in bounded time', async () => {
    await expectFailure(
      deployInputs('pi-gen1', { 'target-host': '10.99.2.77', 'connect-timeout': '5' }),
      /could not (open a connection to|reach) target root@10.99.2.77/,
      {
        within: 90_000
      }
    )
  }, 120_000)

  it('the Pi refuses the key', async () => {
    await expectFailure(
      deployInputs('pi-gen1', { 'ssh-private-key': key('stranger'), 'jump-host-key': key('deploy') }),
      /target root@10.99.2.2 refused the key/
    )
  }, 120_000)

  it('the jump host refuses the key', async () => {
    await expectFailure(
      deployInputs('pi-gen1', { 'ssh-private-key': key('stranger') }),
      /jump host root@10.99.1.2 refused the key/
    )
  }, 120_000)

  it('an unknown target user: authentication fails, naming the user', async () => {
    // No such user on the Pi: authentication fails, which must say which user.
    await expectFailure(
      deployInputs('pi-gen1', { 'target-user': 'pi' }),
      /refused the key \(authentication failed for user pi\)/
    )
  }, 120_000)
})

import * as fs from 'fs'
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
 * A chain of two jump hosts (OpenSSH's `ProxyJump a,b`): the runner reaches jump, jump reaches
 * jump2 (10.99.6.0/24, no route from the runner), jump2 reaches pi2 at 10.99.7.2. jump2 takes only
 * the user nda-deploy and the keys jump-only and jump2-only (not the deploy key), so each hop's
 * user, key and host key are its own, and a failure names the hop that failed.
 */
describeE2E('jump-host as a chain: each hop its own user, key and host key check', () => {
  const chain = (): string => `${testbed().TESTBED_JUMP}, nda-deploy@${testbed().TESTBED_JUMP2}`
  const viaChain = (config: string, extra: Record<string, string> = {}): Record<string, string> =>
    deployInputs(config, {
      'target-host': testbed().TESTBED_PI2_CHAIN,
      'jump-host': chain(),
      'jump-host-key': key('jump-only'),
      ...extra
    })
  let before: PiState

  beforeAll(() => {
    for (const c of ['pi-gen1', 'pi-gen2']) fixturePath(c)
  }, 300_000)
  beforeEach(() => {
    resetPi('pi2')
    before = piState('pi2')
  }, 60_000)

  /** A failure before anything changed: one annotation naming `message`, pi2 as it was. */
  async function expectRefused(inputs: Record<string, string>, message: RegExp): Promise<void> {
    const run = await runAction(inputs)
    expect(run.exitCode).not.toBe(0)
    expect(run.outputs.result).toBe('failed')
    expect(run.log.split('\n').find(l => l.startsWith('::error title='))).toMatch(message)
    expect(run.summary).toMatch(/\*\*What to do:\*\* \S/)
    expect(piState('pi2')).toEqual(before)
  }

  it('two jump hosts, one jump-host-key for both: a full deploy and its confirmation over a new chain', async () => {
    const run = await runAction(viaChain('pi-gen1'))
    expect(run.exitCode).toBe(0)
    expect(run.outputs).toMatchObject({ result: 'deployed', 'store-path': fixturePath('pi-gen1') })
    expect(piState('pi2').current).toBe(fixturePath('pi-gen1'))
    // The confirmation dialled the whole chain again (magic rollback's proof that SSH still works).
    expect(run.summary).toMatch(/Confirmed \| over a new connection/)
  }, 300_000)

  it('one key per hop, in the order of jump-host', async () => {
    const perHop = `${key('deploy')}\n${key('jump2-only')}`
    const run = await runAction(viaChain('pi-gen2', { 'jump-host-key': perHop }))
    expect(run.exitCode).toBe(0)
    expect(run.outputs.result).toBe('deployed')
    expect(piState('pi2').current).toBe(fixturePath('pi-gen2'))
    // The same keys the other way round: jump refuses jump2-only, and says it is the first hop.
    const swapped = `${key('jump2-only')}\n${key('deploy')}`
    resetPi('pi2')
    before = piState('pi2')
    await expectRefused(
      viaChain('pi-gen2', { 'jump-host-key': swapped }),
      /jump host 1 of 2 root@10\.99\.1\.2 refused the key/
    )
  }, 300_000)

  it('the second hop refuses the key: named as the second hop, pi2 untouched', async () => {
    // No jump-host-key: every hop is offered the deploy key, which jump takes and jump2 does not.
    await expectRefused(
      viaChain('pi-gen1', { 'jump-host-key': '' }),
      /jump host 2 of 2 nda-deploy@10\.99\.6\.2 refused the key \(authentication failed for user nda-deploy\)/
    )
  }, 120_000)

  it("the second hop's user is its own: without it the target's user (root) is refused there", async () => {
    await expectRefused(
      viaChain('pi-gen1', { 'jump-host': `${testbed().TESTBED_JUMP},${testbed().TESTBED_JUMP2}` }),
      /jump host 2 of 2 root@10\.99\.6\.2 refused the key \(authentication failed for user root\)/
    )
  }, 120_000)

  it("a wrong host key for the second hop: that hop's host key check fails, nothing is sent past it", async () => {
    const t = testbed()
    const jumpKey = fs.readFileSync(`${t.TESTBED_KEYS}/jump_host_ed25519.pub`, 'utf8').split(' ').slice(0, 2)
    const knownHosts = fs
      .readFileSync(t.TESTBED_KNOWN_HOSTS, 'utf8')
      .split('\n')
      .filter(l => !l.startsWith(`${t.TESTBED_JUMP2} `))
      .concat(`${t.TESTBED_JUMP2} ${jumpKey.join(' ')}`)
      .join('\n')
    await expectRefused(
      viaChain('pi-gen1', { 'known-hosts': knownHosts }),
      /host key check failed for jump host 2 of 2 nda-deploy@10\.99\.6\.2: .*does not match known-hosts/
    )
  }, 120_000)

  it('proxy-command carries the first hop of the chain (here: jump2, through socat in the first bastion)', async () => {
    const run = await runAction(
      viaChain('pi-gen1', {
        'jump-host': `nda-deploy@${testbed().TESTBED_JUMP2}`,
        'proxy-command': 'exec ip netns exec nda-jump socat - TCP:%h:%p'
      })
    )
    expect(run.exitCode).toBe(0)
    expect(run.outputs.result).toBe('deployed')
    expect(piState('pi2').current).toBe(fixturePath('pi-gen1'))
  }, 300_000)
})

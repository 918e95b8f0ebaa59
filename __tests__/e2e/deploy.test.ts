import * as fs from 'fs'
import {
  assertNothingLeftOnPi,
  deployed,
  deployInputs,
  describeE2E,
  installedState,
  fixturePath,
  key,
  MAIN_PI,
  narSizes,
  onPi,
  piState,
  resetPi,
  runAction,
  testbed
} from './harness'

describeE2E('deploy through the jump host (switch, then an incremental switch, then unchanged)', () => {
  let gen0: string, gen1: string, gen2: string
  beforeAll(() => {
    gen0 = fixturePath('pi-gen0')
    gen1 = fixturePath('pi-gen1')
    gen2 = fixturePath('pi-gen2')
  }, 300_000)
  // Every test starts from the Pi as installed and deploys what it builds on itself: any order works.
  beforeEach(() => resetPi(), 60_000)

  it('starts from generation 0 as installed', () => {
    expect(piState()).toMatchObject({
      current: gen0,
      profile: gen0,
      profileLink: 'system-1-link',
      bootDefault: gen0
    })
  })

  it('deploys generation 1: copies what the Pi lacks, sets the profile, activates', async () => {
    const run = await runAction(deployInputs('pi-gen1'))
    expect(run.exitCode).toBe(0)
    expect(run.outputs).toMatchObject({
      result: 'deployed',
      'store-path': gen1,
      'previous-store-path': gen0,
      changed: 'true',
      generation: '2'
    })
    // The Pi already had busybox and hello from gen0: only the rest crossed the tunnel.
    const sizes1 = narSizes(gen1)
    const sizes0 = narSizes(gen0)
    const expected = [...sizes1].filter(([p]) => !sizes0.has(p)).reduce((a, [, s]) => a + s, 0)
    expect(Number(run.outputs['copied-bytes'])).toBe(expected)
    expect(Number(run.outputs['closure-size'])).toBe([...sizes1.values()].reduce((a, b) => a + b, 0))
    expect(piState()).toMatchObject({
      current: gen1,
      profile: gen1,
      profileLink: 'system-2-link',
      bootDefault: gen1
    })
    expect(onPi('/run/current-system/sw/bin/pi-tools')).toBe('pi-tools 1.0')
    // The temporary GC root is gone once the profile holds the system; so are the lock and the agent.
    expect(onPi('ls /nix/var/nix/gcroots/nix-deploy-action | wc -l')).toBe('0')
    expect(onPi('test -e /nix/var/nix-deploy-action/lock/owner && echo held || echo free')).toBe('free')
    await assertNothingLeftOnPi()
    expect(run.summary.split('\n')[0]).toBe('### nix-deploy-action: ✅ Deployed')
    expect(run.summary).toContain(gen1)
    expect(run.summary).toMatch(/on the wire \(zstd\)/)
    // The package diff against what the Pi ran (gen0): pi-tools is new.
    expect(run.summary).toContain(
      `#### Changes against what target <code>root@${deployInputs('x')['target-host']}</code> runs`
    )
    expect(run.summary).toContain('| + | pi-tools | | 1.0 |')
    expect(run.log).toContain('::group::switch-to-configuration switch')
  }, 300_000)

  it('deploys generation 2 incrementally: only the changed paths are sent', async () => {
    await deployed('pi-gen1')
    const run = await runAction(deployInputs('pi-gen2'))
    expect(run.exitCode).toBe(0)
    expect(run.outputs).toMatchObject({
      result: 'deployed',
      'store-path': gen2,
      'previous-store-path': gen1,
      generation: '3',
      changed: 'true'
    })
    const sizes2 = narSizes(gen2)
    const sizes1 = narSizes(gen1)
    const sizes0 = narSizes(gen0)
    const newPaths = [...sizes2].filter(([p]) => !sizes1.has(p) && !sizes0.has(p))
    expect(Number(run.outputs['copied-bytes'])).toBe(newPaths.reduce((a, [, s]) => a + s, 0))
    expect(Number(run.outputs['copied-bytes'])).toBeLessThan(Number(run.outputs['closure-size']))
    expect(piState()).toMatchObject({
      current: gen2,
      profile: gen2,
      profileLink: 'system-3-link',
      bootDefault: gen2
    })
    expect(piState().generations).toEqual(['system-1-link', 'system-2-link', 'system-3-link'])
    expect(onPi('/run/current-system/sw/bin/hello')).toBe('hello 2.12.1')
    expect(run.summary).toContain('| ↕ | hello | 2.12 | 2.12.1 |')
    expect(run.summary).toContain('| + | htop | | 3.3.0 |')
    expect(run.summary).toMatch(
      /1 changed, 1 added, 0 removed; \d+ other paths .* closure [0-9.]+ MiB → [0-9.]+ MiB/
    )
  }, 300_000)

  it('reports unchanged, copies nothing and makes no generation when the Pi already runs that system', async () => {
    await deployed('pi-gen1')
    await deployed('pi-gen2')
    const run = await runAction(deployInputs('pi-gen2'))
    expect(run.exitCode).toBe(0)
    expect(run.outputs).toMatchObject({
      result: 'unchanged',
      changed: 'false',
      'copied-bytes': '0',
      generation: '3',
      'previous-store-path': gen2
    })
    expect(run.log).not.toContain('Copying')
    expect(piState().generations).toEqual(['system-1-link', 'system-2-link', 'system-3-link'])
  }, 300_000)

  it("the post step removes the run's directory under RUNNER_TEMP", async () => {
    const run = await runAction(deployInputs('pi-gen2'))
    const dir = run.state.tempDir
    expect(dir.startsWith(run.runnerTemp)).toBe(true)
    expect(fs.existsSync(dir)).toBe(true)
    const post = await runAction({}, { state: run.state, runnerTemp: run.runnerTemp })
    expect(post.exitCode).toBe(0)
    expect(fs.existsSync(dir)).toBe(false)
  }, 300_000)
})

describeE2E('other modes and the direct (no jump host) case', () => {
  let gen0: string, gen1: string
  beforeAll(() => {
    gen0 = fixturePath('pi-gen0')
    gen1 = fixturePath('pi-gen1')
  }, 300_000)
  beforeEach(() => resetPi(), 60_000)

  it('dry-activate copies and reports, but changes neither the profile nor the running system', async () => {
    const run = await runAction(deployInputs('pi-gen1', { mode: 'dry-activate' }))
    expect(run.exitCode).toBe(0)
    expect(run.outputs).toMatchObject({ result: 'dry-activated', changed: 'true', generation: '' })
    expect(run.log).toContain('would start the following units: fixture-gen1.service')
    expect(run.summary).toContain('| start | fixture-gen1.service |')
    expect(piState()).toMatchObject(installedState(gen0))
  }, 300_000)

  it('test mode, straight to the Pi on the LAN (no jump host): runs the system, leaves the profile', async () => {
    const t = testbed()
    const direct: Record<string, string> = {
      'target-host': MAIN_PI === 'pi' ? t.TESTBED_PI_DIRECT : t.TESTBED_SPI_DIRECT,
      'jump-host': ''
    }
    const run = await runAction(deployInputs('pi-gen1', { mode: 'test', ...direct }))
    expect(run.exitCode).toBe(0)
    expect(run.outputs).toMatchObject({
      result: 'deployed',
      changed: 'true',
      'previous-store-path': gen0,
      generation: ''
    })
    expect(piState()).toMatchObject({
      current: gen1,
      profile: gen0,
      bootDefault: gen0,
      generations: ['system-1-link']
    })
  }, 300_000)

  it('boot mode sets the profile and boot entry, not the running system', async () => {
    const run = await runAction(deployInputs('pi-gen0', { mode: 'boot' }))
    // gen0 already is the boot profile: unchanged.
    expect(run.outputs.result).toBe('unchanged')
    const run2 = await runAction(deployInputs('pi-gen1', { mode: 'boot' }))
    expect(run2.exitCode).toBe(0)
    expect(run2.outputs).toMatchObject({ result: 'deployed', changed: 'true', generation: '2' })
    // The next boot's system changed; what runs now did not.
    expect(piState()).toMatchObject({ current: gen0, profile: gen1, bootDefault: gen1 })
  }, 300_000)

  it('build mode builds and never connects (an unreachable target is fine)', async () => {
    const run = await runAction(
      deployInputs('pi-gen2', { mode: 'build', 'target-host': '10.99.9.9', 'jump-host': '' })
    )
    expect(run.exitCode).toBe(0)
    expect(run.outputs).toMatchObject({
      result: 'built',
      'store-path': fixturePath('pi-gen2'),
      'previous-store-path': '',
      changed: 'false'
    })
    expect(Number(run.outputs['closure-size'])).toBeGreaterThan(0)
    expect(run.summary).not.toContain('| connect |')
  }, 300_000)

  it('build mode with diff-against shows what would change against another configuration', async () => {
    const t = testbed()
    const run = await runAction(
      deployInputs('pi-gen2', {
        mode: 'build',
        'target-host': '',
        'jump-host': '',
        'diff-against': `${t.TESTBED_FIXTURE}#pi-gen1`
      })
    )
    expect(run.exitCode).toBe(0)
    expect(run.summary).toContain(
      `#### Changes against ${t.TESTBED_FIXTURE}#nixosConfigurations.&#34;pi-gen1&#34;`
    )
    expect(run.summary).toContain('| ↕ | hello | 2.12 | 2.12.1 |')
    const byPath = await runAction(
      deployInputs('pi-gen2', { mode: 'build', 'diff-against': fixturePath('pi-gen2') })
    )
    expect(byPath.summary).toContain('No package versions change.')
  }, 300_000)

  it('dry-activate without a key (a fork PR) degrades to a build with a warning', async () => {
    const run = await runAction(
      deployInputs('pi-gen1', { mode: 'dry-activate', 'ssh-private-key': '', 'known-hosts': '' })
    )
    expect(run.exitCode).toBe(0)
    expect(run.outputs.result).toBe('built')
    expect(run.log).toMatch(
      /::warning::dry-activate ran as a build only: ssh-private-key, known-hosts are empty/
    )
  }, 300_000)

  it('compresses the stream (zstd by default, gzip when asked) and still imports exactly the NARs', async () => {
    const zstd = await runAction(deployInputs('pi-gen1', { mode: 'dry-activate' }))
    expect(zstd.summary).toMatch(/on the wire \(zstd\)/)
    expect(Number(zstd.outputs['copied-bytes'])).toBeGreaterThan(0)
    // The paths stay on the Pi after a dry run: the same one again copies nothing.
    const again = await runAction(deployInputs('pi-gen1', { mode: 'dry-activate' }))
    expect(again.outputs['copied-bytes']).toBe('0')
    const gz = await runAction(deployInputs('pi-gen2', { mode: 'dry-activate', compression: 'gzip' }))
    expect(gz.exitCode).toBe(0)
    expect(gz.summary).toMatch(/on the wire \(gzip\)/)
    const wire = /([0-9.]+) KiB on the wire/.exec(gz.summary)
    expect(Number(wire?.[1]) * 1024).toBeLessThan(Number(gz.outputs['copied-bytes']))
    expect(onPi(`nix-store --verify-path ${fixturePath('pi-gen2')} && echo ok`)).toBe('ok')
  }, 300_000)

  it('an encrypted key works with its passphrase, and an RSA key too', async () => {
    const enc = await runAction(
      deployInputs('pi-gen1', {
        'ssh-private-key': key('deploy-encrypted'),
        'ssh-key-passphrase': 'correct horse battery staple'
      })
    )
    expect(enc.exitCode).toBe(0)
    expect(enc.outputs.result).toBe('deployed')
    const rsa = await runAction(deployInputs('pi-gen1', { 'ssh-private-key': key('deploy-rsa') }))
    expect(rsa.exitCode).toBe(0)
    expect(rsa.outputs.result).toBe('unchanged')
    expect(piState()).toMatchObject({ current: gen1, profile: gen1 })
  }, 300_000)
})

import {
  assertNothingLeftOnPi,
  deployInputs,
  describeE2E,
  fixturePath,
  onPi,
  piState,
  resetPi,
  runAction
} from './harness'

describeE2E('a failing activation is rolled back to exactly what ran before', () => {
  let gen0: string, gen1: string
  beforeAll(() => {
    gen0 = fixturePath('pi-gen0')
    gen1 = fixturePath('pi-gen1')
    fixturePath('pi-activation-fails')
  }, 300_000)
  beforeEach(() => resetPi(), 60_000)

  it('switch: profile link, running system and boot entry come back; the failed generation is deleted', async () => {
    const before = piState()
    const run = await runAction(deployInputs('pi-activation-fails'))
    expect(run.exitCode).not.toBe(0)
    expect(run.outputs).toMatchObject({ result: 'rolled-back', 'previous-store-path': gen0 })
    expect(run.log).toMatch(
      /::error title=.*switch-to-configuration switch failed on target root@10\.99\.(2|5|13|14)\.2 \(exit 1\); rolled back to/
    )
    expect(run.summary).toContain('fixture: activation fails on purpose')
    expect(run.summary.split('\n')[0]).toMatch(/Rolled back/)
    expect(piState()).toEqual(before)
    expect(onPi('ls /nix/var/nix/gcroots/nix-deploy-action | wc -l')).toBe('0')
    await assertNothingLeftOnPi()
  }, 300_000)

  it('after a test deploy (running system differs from the profile), both come back as they were', async () => {
    const t = await runAction(deployInputs('pi-gen1', { mode: 'test' }))
    expect(t.outputs.result).toBe('deployed')
    const before = piState()
    expect(before).toMatchObject({ current: gen1, profile: gen0, bootDefault: gen0 })
    const run = await runAction(deployInputs('pi-activation-fails'))
    expect(run.outputs.result).toBe('rolled-back')
    // Not "profile minus one" and not gen0 re-activated: gen1 runs again, gen0 stays the boot default.
    expect(piState()).toEqual(before)
  }, 300_000)

  it('a generation that existed before the deploy survives its rollback (nix-env --set reused it)', async () => {
    // The newest generation already holds the failing system, but the profile points at an older
    // one (as after `nix-env --switch-generation`): nix-env --set reuses that newest generation.
    const failing = fixturePath('pi-activation-fails')
    expect((await runAction(deployInputs('pi-activation-fails'))).outputs.result).toBe('rolled-back')
    onPi(
      `nix-env -p /nix/var/nix/profiles/system --set ${failing} && nix-env -p /nix/var/nix/profiles/system --switch-generation 1`
    )
    const before = piState()
    expect(before.generations).toEqual(['system-1-link', 'system-2-link'])
    expect(before.profileLink).toBe('system-1-link')
    const run = await runAction(deployInputs('pi-activation-fails'))
    expect(run.outputs.result).toBe('rolled-back')
    expect(piState()).toEqual(before)
    await assertNothingLeftOnPi([failing])
  }, 300_000)

  it('a later good deploy works normally after a rollback', async () => {
    expect((await runAction(deployInputs('pi-activation-fails'))).outputs.result).toBe('rolled-back')
    const run = await runAction(deployInputs('pi-gen1'))
    expect(run.exitCode).toBe(0)
    expect(run.outputs.result).toBe('deployed')
    expect(piState()).toMatchObject({ current: gen1, profile: gen1, bootDefault: gen1 })
  }, 300_000)
})

describeE2E('a rollback that fails too is reported as failed, with what the target runs', () => {
  beforeAll(() => {
    resetPi()
    fixturePath('pi-fragile')
    fixturePath('pi-activation-fails')
  }, 300_000)
  afterAll(() => {
    onPi('rm -f /run/fixture-break')
  })

  it('reports both failures and the state to fix by hand', async () => {
    const fragile = fixturePath('pi-fragile')
    expect((await runAction(deployInputs('pi-fragile'))).outputs.result).toBe('deployed')
    onPi('touch /run/fixture-break')
    const run = await runAction(deployInputs('pi-activation-fails'))
    expect(run.exitCode).not.toBe(0)
    expect(run.outputs.result).toBe('failed')
    expect(run.log).toMatch(
      /::error title=.*failed on target root@10\.99\.(2|5|13|14)\.2, and rolling back failed too/
    )
    expect(run.summary).toContain('fixture: activation fails on purpose')
    expect(run.summary).toContain('fixture: fragile system fails to re-activate')
    expect(run.summary).toContain(`before this deploy it ran ${fragile}`)
  }, 300_000)
})

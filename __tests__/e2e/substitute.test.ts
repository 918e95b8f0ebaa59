import { execFileSync } from 'child_process'
import * as fs from 'fs'
import * as path from 'path'
import {
  deployInputs,
  describeE2E,
  fixturePath,
  narSizes,
  onPi,
  piState,
  resetPi,
  runAction,
  testbed
} from './harness'

/**
 * substitute-on-destination: the Pi first fetches from its own substituter (the testbed gives it a
 * signed binary cache, as a real Pi has cache.nixos.org) what that has; only the rest crosses the
 * tunnel. Without the paths there (or without any substituter) it degrades to copying everything.
 */
describeE2E('substitute-on-destination', () => {
  let gen0: string, gen2: string
  const cache = (): string => testbed().TESTBED_SUBSTITUTER
  const emptyCache = (): void => {
    for (const f of fs.readdirSync(cache()))
      if (f !== 'nix-cache-info') fs.rmSync(path.join(cache(), f), { recursive: true })
  }
  beforeAll(() => {
    gen0 = fixturePath('pi-gen0')
    gen2 = fixturePath('pi-gen2')
    emptyCache()
  }, 300_000)
  afterAll(emptyCache)

  it('the Pi fetches from its own substituter what it has; only the rest is copied', async () => {
    resetPi()
    // The Pi's substituter has gen2's new packages (as cache.nixos.org has nixpkgs' packages).
    const sizes = narSizes(gen2)
    const inCache = [...sizes.keys()].filter(p => /-(htop-3\.3\.0|hello-2\.12\.1|pi-tools-1\.0)$/.test(p))
    expect(inCache).toHaveLength(3)
    execFileSync(
      'nix',
      [
        '--extra-experimental-features',
        'nix-command',
        'copy',
        '--to',
        `file://${cache()}?secret-key=${testbed().TESTBED_KEYS}/substituter.secret`,
        ...inCache
      ],
      { env: { ...process.env, NIX_CONFIG: 'substituters =' }, stdio: 'pipe' }
    )
    const onPiBefore = new Set(onPi(`nix-store -qR ${gen0}`).split('\n'))
    const lacking = [...sizes.keys()].filter(p => !onPiBefore.has(p))
    const rest = lacking.filter(p => !inCache.includes(p))

    const run = await runAction(deployInputs('pi-gen2'))
    expect(run.exitCode).toBe(0)
    expect(run.outputs.result).toBe('deployed')
    expect(Number(run.outputs['copied-bytes'])).toBe(rest.reduce((a, p) => a + sizes.get(p)!, 0))
    const substitutedBytes = inCache.reduce((a, p) => a + sizes.get(p)!, 0)
    expect(run.summary).toMatch(
      /\| Substituted on the target \| [0-9.]+ (KiB|MiB) \(NAR\) in 3 paths, from its own substituters \|/
    )
    expect(run.log).toContain(`The target fetched 3 of ${lacking.length} paths`)
    expect(substitutedBytes).toBeGreaterThan(0)
    expect(piState()).toMatchObject({ current: gen2, profile: gen2 })
    // Substituted paths are whole and registered (signed by the Pi's trusted key).
    expect(onPi(`nix-store --verify-path ${inCache.join(' ')} && echo ok`)).toBe('ok')
  }, 300_000)

  it('substitute-on-destination: false copies everything itself', async () => {
    resetPi()
    const run = await runAction(deployInputs('pi-gen2', { 'substitute-on-destination': 'false' }))
    expect(run.exitCode).toBe(0)
    expect(run.summary).not.toContain('Substituted on the target')
    const sizes = narSizes(gen2)
    const onPiBefore = new Set(narSizes(gen0).keys())
    const lacking = [...sizes].filter(([p]) => !onPiBefore.has(p))
    expect(Number(run.outputs['copied-bytes'])).toBe(lacking.reduce((a, [, s]) => a + s, 0))
  }, 300_000)

  it('a Pi whose substituters have nothing (or cannot be reached) degrades to copying all, promptly', async () => {
    emptyCache()
    resetPi()
    // As nda-deploy through sudo, the Pi's Nix uses the default configuration: cache.nixos.org,
    // which is unreachable here (no internet).
    const run = await runAction(deployInputs('pi-gen2', { 'target-user': 'nda-deploy' }))
    expect(run.exitCode).toBe(0)
    expect(run.log).toContain(
      'The target fetched none of the paths from its own substituters (unreachable, or they lack them): copying them all'
    )
    expect(run.summary).not.toContain('Substituted on the target')
    expect(Number(run.outputs['copied-bytes'])).toBeGreaterThan(0)
    expect(run.ms).toBeLessThan(120_000) // generous: proves it does not hang on an unreachable cache
    const direct = await runAction(deployInputs('pi-gen1'))
    expect(direct.exitCode).toBe(0)
    expect(direct.log).toContain('The target fetched none of the paths from its own substituters')
  }, 300_000)
})

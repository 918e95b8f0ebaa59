import { execFileSync } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { fetchFromCache } from '../../src/cache/publish'
import { deployPlanProblems } from '../../src/nix/deploy-plan'
import { RunnerNix } from '../../src/nix/nix'
import { describeE2E, runAction, testbed } from './harness'

/**
 * A fleet past one job (issue #35), its first half: the build publishes every machine's closure to
 * a binary cache, each path signed with signing-key, and plans the shards for the deploy jobs.
 */
describeE2E('publish-to: build once, publish once, plan the shards', () => {
  const fixture = (...p: string[]): string => path.join(testbed().TESTBED, 'fixture', ...p)
  let work: string
  let key: { secret: string; public: string }
  beforeAll(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-publish-'))
    execFileSync('nix-store', ['--generate-binary-cache-key', 'nda-fleet-1', `${work}/sk`, `${work}/pk`])
    key = {
      secret: fs.readFileSync(`${work}/sk`, 'utf8'),
      public: fs.readFileSync(`${work}/pk`, 'utf8').trim()
    }
  })
  afterAll(() => fs.rmSync(work, { recursive: true, force: true }))

  /** mode build of the fixture network (or `network`), publishing to the file:// cache `cache`. */
  const publishTo = (
    cache: string,
    secret: string,
    extra: Record<string, string> = {},
    opts: Parameters<typeof runAction>[1] = {}
  ) =>
    runAction(
      {
        network: fixture('network', 'rpi.nix'),
        nixpkgs: fixture('nixpkgs'),
        mode: 'build',
        'nix-options': 'substituters =',
        'publish-to': `file://${cache}`,
        'signing-key': secret,
        ...extra
      },
      opts
    )

  it('a network built in mode build: every closure in the cache, signed; a plan of two shards', async () => {
    const cache = path.join(work, 'cache')
    const run = await publishTo(cache, key.secret, { shards: '2' })
    expect(run.exitCode).toBe(0)
    const { plan, problems } = deployPlanProblems(run.outputs['deploy-plan'])
    expect(problems).toEqual([])
    expect(plan!.cache).toEqual({ uri: `file://${cache}`, publicKey: key.public })
    expect(plan!.machines.map(m => [m.name, m.host])).toEqual([
      ['pi3', '10.99.2.2'],
      ['pi3b', '10.99.4.2']
    ])
    expect(plan!.shards).toEqual([
      { id: '1', machines: ['pi3'] },
      { id: '2', machines: ['pi3b'] }
    ])
    // Every path of every closure is in the cache, and verifies against the key alone.
    for (const m of plan!.machines) {
      const closure = execFileSync('nix-store', ['-qR', m.storePath], { encoding: 'utf8' }).trim().split('\n')
      // Exits non-zero if a path is missing or not signed by the key.
      execFileSync(
        'nix',
        [
          '--extra-experimental-features',
          'nix-command',
          'store',
          'verify',
          '--store',
          `file://${cache}`,
          '--option',
          'trusted-public-keys',
          key.public,
          '--no-contents',
          ...closure
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] }
      )
    }
    expect(run.summary).toContain(`Published to`)
  }, 600_000)

  it('a network file whose two machines are one target (a copied entry): refused before anything is built or published', async () => {
    const copied = path.join(fixture('network'), `copied-${process.pid}.nix`)
    fs.writeFileSync(
      copied,
      fs.readFileSync(fixture('network', 'rpi.nix'), 'utf8').replace('"10.99.4.2"', '"10.99.2.2"')
    )
    try {
      const cache = path.join(work, 'copied')
      const run = await publishTo(cache, key.secret, { network: copied, shards: '2' })
      expect(run.exitCode).not.toBe(0)
      expect(run.log).toMatch(/::error.*pi3 and pi3b are the same target \(10\.99\.2\.2:22\)/)
      expect(run.outputs['deploy-plan'] ?? '').toBe('')
      expect(fs.existsSync(cache)).toBe(false)
    } finally {
      fs.rmSync(copied, { force: true })
    }
  }, 300_000)

  it("the runner's fetch from a plan's cache (for a target that cannot reach it) takes only signed paths, whatever nix-options say", async () => {
    const cache = `file://${path.join(work, 'unsigned')}`
    const nix = ['--extra-experimental-features', 'nix-command']
    // An input-addressed path (a content-addressed one needs no signature), put in the cache unsigned.
    const built = execFileSync(
      'nix-build',
      [
        '--option',
        'substituters',
        '',
        '--option',
        'sandbox',
        'false',
        '--no-out-link',
        '-E',
        `derivation { name = "nda-unsigned"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo ${Date.now()} > $out" ]; }`
      ],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }
    ).trim()
    execFileSync('nix', [...nix, 'copy', '--to', cache, built], { stdio: 'ignore' })
    execFileSync('nix-store', ['--delete', built], { stdio: 'ignore' })
    expect(fs.existsSync(built)).toBe(false)
    // The user's nix-options turn signature checks off: the fetch still refuses it.
    const lax = new RunnerNix([
      ['substituters', ''],
      ['require-sigs', 'false']
    ])
    await expect(fetchFromCache(lax, { uri: cache, publicKey: key.public }, [built])).rejects.toThrow(
      /fetching 1 paths from .* on the runner failed: [\s\S]*lacks a valid signature/
    )
    expect(fs.existsSync(built)).toBe(false)
  }, 120_000)

  it('a cache that holds the closures already, signed with another key (a rotated key): every path gets this key too', async () => {
    const cache = path.join(work, 'rotated')
    const publish = (secret: string) => publishTo(cache, secret)
    execFileSync('nix-store', ['--generate-binary-cache-key', 'nda-fleet-2', `${work}/sk2`, `${work}/pk2`])
    const rotated = fs.readFileSync(`${work}/pk2`, 'utf8').trim()
    const first = await publish(key.secret)
    expect(first.exitCode).toBe(0)
    const again = await publish(fs.readFileSync(`${work}/sk2`, 'utf8'))
    if (again.exitCode !== 0) console.log(again.log)
    expect(again.exitCode).toBe(0)
    const { plan } = deployPlanProblems(again.outputs['deploy-plan'])
    expect(plan!.cache.publicKey).toBe(rotated)
    // Each path of each closure, as the cache's .narinfo has it: signed by both keys now.
    for (const m of plan!.machines) {
      const infos = JSON.parse(
        execFileSync(
          'nix',
          [
            '--extra-experimental-features',
            'nix-command',
            'path-info',
            '--store',
            `file://${cache}`,
            '--json',
            '--sigs',
            '--recursive',
            m.storePath
          ],
          { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }
        )
      ) as Array<{ path: string; signatures?: string[] }>
      expect(infos.length).toBeGreaterThan(1)
      for (const info of infos) {
        const signers = (info.signatures ?? []).map(s => s.split(':')[0]).sort()
        expect({ path: info.path, signers }).toEqual({
          path: info.path,
          signers: ['nda-fleet-1', 'nda-fleet-2']
        })
      }
    }
  }, 600_000)
  it("a cache that holds one of the build's paths with another content (someone else published it first): not signed; the publish fails naming it", async () => {
    const cache = path.join(work, 'shared')
    // Each with a Nix cache of .narinfo files of its own: what the cache holds is read from it.
    const publish = (secret: string, xdg: string) =>
      publishTo(cache, secret, {}, { env: { XDG_CACHE_HOME: xdg } })
    const first = await publish(key.secret, fs.mkdtempSync(path.join(work, 'xdg-')))
    expect(first.exitCode).toBe(0)
    const top = deployPlanProblems(first.outputs['deploy-plan']).plan!.machines[0].storePath
    // The other pipeline's content under the system's name: another NAR hash in its .narinfo.
    const narinfo = path.join(cache, `${path.basename(top).slice(0, 32)}.narinfo`)
    const text = fs.readFileSync(narinfo, 'utf8')
    const forged = text.replace(
      /^NarHash: sha256:(\S)/m,
      (_, c: string) => `NarHash: sha256:${c === '0' ? '1' : '0'}`
    )
    expect(forged).not.toBe(text)
    fs.writeFileSync(narinfo, forged)
    execFileSync('nix-store', ['--generate-binary-cache-key', 'nda-fleet-3', `${work}/sk3`, `${work}/pk3`])
    const again = await publish(
      fs.readFileSync(`${work}/sk3`, 'utf8'),
      fs.mkdtempSync(path.join(work, 'xdg-'))
    )
    expect(again.exitCode).not.toBe(0)
    expect(again.log).toMatch(
      new RegExp(
        `::error.*holds 1 of this build's store paths with another content than this build's.*${top.replace(/[.+]/g, '\\$&')}`
      )
    )
    expect(fs.readFileSync(narinfo, 'utf8')).not.toMatch(/nda-fleet-3:/)
    expect(again.outputs['deploy-plan'] ?? '').toBe('')
  }, 600_000)
})

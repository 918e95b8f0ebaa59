import { execFileSync } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { deployPlanProblems } from '../../src/nix/deploy-plan'
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

  it('a network built in mode build: every closure in the cache, signed; a plan of two shards', async () => {
    const cache = path.join(work, 'cache')
    const run = await runAction({
      network: fixture('network', 'rpi.nix'),
      nixpkgs: fixture('nixpkgs'),
      mode: 'build',
      'nix-options': 'substituters =',
      'publish-to': `file://${cache}`,
      'signing-key': key.secret,
      shards: '2'
    })
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
})

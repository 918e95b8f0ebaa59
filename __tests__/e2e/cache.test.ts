import { execFileSync } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { CacheService } from './cache-service'
import { deployInputs, describeE2E, runAction, testbed } from './harness'

/**
 * A real cache round trip: @actions/cache in the bundled action saves the runner's store (as a
 * binary cache) to a local cache service (Twirp + Azurite) and restores it in a later run, after the
 * built paths were deleted from the store: the second run builds nothing.
 */
const NIX_ENV = { ...process.env, NIX_CONFIG: 'substituters =\nextra-platforms = aarch64-linux' }
const nix = (...args: string[]): string =>
  execFileSync('nix', ['--extra-experimental-features', 'nix-command flakes', ...args], {
    encoding: 'utf8',
    env: NIX_ENV
  }).trim()

describeE2E("the runner's store survives between runs through @actions/cache", () => {
  const service = new CacheService()
  // @actions/cache versions entries by path: both runs use the same RUNNER_TEMP, as on a runner.
  const runnerTemp = path.join(os.tmpdir(), 'nda-cache-runner-temp')
  let inputs: Record<string, string>
  beforeAll(async () => {
    await service.start()
    fs.rmSync(runnerTemp, { recursive: true, force: true })
    fs.mkdirSync(runnerTemp, { recursive: true })
    // A configuration this runner has never built.
    fs.writeFileSync(
      path.join(testbed().TESTBED, 'fixture', 'nonce'),
      `cache test ${Date.now()} ${Math.random()}\n`
    )
    inputs = deployInputs('pi-nonce', {
      mode: 'build',
      'target-host': '',
      'jump-host': '',
      'cache-key': 'nda-test'
    })
  }, 120_000)
  afterAll(async () => {
    await service.stop()
  })

  it('a cold run builds, and its post step saves only what the system needs', async () => {
    const run = await runAction(inputs, { env: service.env(), runnerTemp })
    expect(run.exitCode).toBe(0)
    expect(run.outputs['cache-hit']).toBe('false')
    expect(run.summary).toMatch(/\| Derivations built \| [1-9]/)
    expect(run.summary).toContain('| Store cache | no entry yet (saved after this run) |')
    const post = await runAction(inputs, { env: service.env(), runnerTemp, state: run.state })
    expect(post.exitCode).toBe(0)
    expect(post.log).toMatch(/Store cache saved as nda-test-[0-9a-f]{16}-\S+: \d+ paths/)
    expect(service.entries.filter(e => e.finalized)).toHaveLength(1)
  }, 600_000)

  it('after the built paths are deleted, a warm run restores them and builds nothing', async () => {
    const top = nix(
      'eval',
      '--raw',
      `${testbed().TESTBED_FIXTURE}#nixosConfigurations.pi-nonce.config.system.build.toplevel.outPath`
    )
    const etc = execFileSync('nix-store', ['-qR', top], { encoding: 'utf8' })
      .split('\n')
      .find(p => p.endsWith('-etc'))!
    execFileSync('nix-store', ['--delete', top, etc], { env: NIX_ENV, stdio: 'ignore' })
    expect(
      execFileSync('sh', ['-c', `nix-store --check-validity ${top} 2>/dev/null && echo valid || echo gone`], {
        encoding: 'utf8'
      }).trim()
    ).toBe('gone')

    const run = await runAction(inputs, { env: service.env(), runnerTemp })
    expect(run.exitCode).toBe(0)
    expect(run.summary).toContain('| Derivations built | 0 |')
    expect(run.summary).toMatch(/\| Store cache \| restored \d+ paths .* from nda-test-/)
    // Nothing new was built: the post step saves nothing.
    const post = await runAction(inputs, { env: service.env(), runnerTemp, state: run.state })
    expect(post.log).not.toMatch(/Store cache saved/)
    expect(service.entries.filter(e => e.finalized)).toHaveLength(1)
  }, 600_000)

  it('without a cache service: one warning, and the build goes on', async () => {
    const run = await runAction(inputs, { runnerTemp })
    expect(run.exitCode).toBe(0)
    expect(run.log.match(/::warning::No GitHub Actions cache service here/g)).toHaveLength(1)
    expect(run.log).not.toMatch(/::warning::.*(Cache service|ACTIONS_)/)
  }, 300_000)
})

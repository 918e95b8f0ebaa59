import { execFileSync } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { parseSigningKey, SigningKey } from '../../src/cache/signing'
import { CacheService } from './cache-service'
import { deployInputs, describeE2E, fixtureOutPath, runAction, testbed } from './harness'

/**
 * A real cache round trip: @actions/cache in the bundled action saves the runner's store (as a
 * binary cache) to a local cache service (Twirp + Azurite) and restores it in a later run, after the
 * built paths were deleted from the store: the second run builds nothing.
 */
const NIX_ENV = { ...process.env, NIX_CONFIG: 'substituters =\nextra-platforms = aarch64-linux' }
const storeHas = (storePath: string): boolean =>
  execFileSync(
    'sh',
    ['-c', 'nix-store --check-validity "$1" 2>/dev/null && echo valid || echo gone', 'sh', storePath],
    {
      encoding: 'utf8'
    }
  ).trim() === 'valid'

describeE2E("the runner's store survives between runs through @actions/cache", () => {
  const service = new CacheService()
  // Every run has a RUNNER_TEMP and a workspace of its own (runAction's default), as runs on
  // different runner services or ephemeral runners do: the entries must not depend on either. A
  // post step shares its main step's RUNNER_TEMP (it removes the main step's directory there).
  beforeAll(async () => {
    await service.start()
  }, 120_000)
  /**
   * A configuration this runner has never built, with a package it has never built, saved under a
   * cache key of its own: each test brings its own cache entries and depends on no other test.
   */
  const freshInputs = (tag: string): Record<string, string> => {
    fs.writeFileSync(path.join(testbed().TESTBED, 'fixture', 'nonce-base'), `${Date.now()}`)
    fs.writeFileSync(
      path.join(testbed().TESTBED, 'fixture', 'nonce'),
      `cache test ${tag} ${Date.now()} ${Math.random()}\n`
    )
    return deployInputs('pi-nonce', {
      mode: 'build',
      'target-host': '',
      'jump-host': '',
      'cache-key': `nda-test-${tag}`
    })
  }
  const savedEntries = (inputs: Record<string, string>) =>
    service.entries.filter(e => e.finalized && e.key.startsWith(`${inputs['cache-key']}-`))
  /** A cold run and its post step, which saves the store cache: where the restoring tests start. */
  const coldRunSaved = async (inputs: Record<string, string>): Promise<void> => {
    const run = await runAction(inputs, { env: service.env() })
    expect(run.exitCode).toBe(0)
    await runAction(inputs, { env: service.env(), state: run.state, runnerTemp: run.runnerTemp })
    expect(savedEntries(inputs)).toHaveLength(1)
  }
  afterAll(async () => {
    await service.stop()
  }, 60_000)

  /** Deletes the system pi-nonce builds (and its etc) from the runner's store; its path. */
  const deleteBuilt = (): string => {
    const top = fixtureOutPath('pi-nonce')
    const etc = execFileSync('nix-store', ['-qR', top], { encoding: 'utf8' })
      .split('\n')
      .find(p => p.endsWith('-etc'))!
    execFileSync('nix-store', ['--delete', top, etc], { env: NIX_ENV, stdio: 'ignore' })
    expect(storeHas(top)).toBe(false)
    return top
  }

  it('a cold run builds, and its post step saves only what the system needs', async () => {
    const inputs = freshInputs('cold')
    const run = await runAction(inputs, { env: service.env() })
    expect(run.exitCode).toBe(0)
    expect(run.outputs['cache-hit']).toBe('false')
    expect(run.summary).toMatch(/\| Derivations built \| [1-9]/)
    expect(run.summary).toContain('| Store cache | no entry yet (saved after this run) |')
    const post = await runAction(inputs, { env: service.env(), state: run.state, runnerTemp: run.runnerTemp })
    expect(post.exitCode).toBe(0)
    expect(post.log).toMatch(/Store cache saved as nda-test-cold-[0-9a-f]{16}-\S+: \d+ paths/)
    expect(savedEntries(inputs)).toHaveLength(1)
  }, 600_000)

  it("@actions/cache's own children (tar, zstd) never see the runtime token, which its client still sends", async () => {
    const inputs = freshInputs('children')
    // Stand-ins first on PATH that record whether they got the token, then run the real tool.
    const wrap = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-wrap-'))
    fs.chmodSync(wrap, 0o755)
    const record = path.join(wrap, 'record')
    fs.writeFileSync(record, '', { mode: 0o666 })
    fs.chmodSync(record, 0o666)
    for (const name of ['tar', 'zstd', 'zstdmt', 'gzip'])
      fs.writeFileSync(
        path.join(wrap, name),
        `#!/bin/sh\necho "${name} \${ACTIONS_RUNTIME_TOKEN:+has-the-token}" >>${record}\nPATH=\${PATH#${wrap}:}\nexec ${name} "$@"\n`,
        { mode: 0o755 }
      )
    try {
      const opts = { env: service.env(), extraPath: wrap }
      const run = await runAction(inputs, opts)
      expect(run.exitCode).toBe(0)
      const post = await runAction(inputs, { ...opts, state: run.state, runnerTemp: run.runnerTemp })
      expect(post.exitCode).toBe(0)
      expect(savedEntries(inputs)).toHaveLength(1)
      deleteBuilt()
      const warm = await runAction(inputs, opts)
      expect(warm.exitCode).toBe(0)
      expect(warm.summary).toMatch(/\| Store cache \| restored \d+ paths/)
      const calls = fs.readFileSync(record, 'utf8').trim().split('\n')
      // tar packed the entry (and zstd's version was asked); none of them had the token.
      expect(calls.filter(c => c.startsWith('tar')).length).toBeGreaterThan(0)
      expect(calls.filter(c => c.includes('has-the-token'))).toEqual([])
      // The client itself sent it, read from the environment it kept.
      expect(service.authorizations).toContain('Bearer test-token')
    } finally {
      fs.rmSync(wrap, { recursive: true, force: true })
    }
  }, 900_000)

  it('after the built paths are deleted, a warm run restores them and builds nothing', async () => {
    const inputs = freshInputs('warm')
    await coldRunSaved(inputs)
    deleteBuilt()

    const run = await runAction(inputs, { env: service.env() })
    expect(run.exitCode).toBe(0)
    expect(run.summary).toContain('| Derivations built | 0 |')
    expect(run.summary).toMatch(/\| Store cache \| restored \d+ paths .* from nda-test-warm-/)
    // Nothing new was built: the post step saves nothing.
    const post = await runAction(inputs, { env: service.env(), state: run.state, runnerTemp: run.runnerTemp })
    expect(post.log).not.toMatch(/Store cache saved/)
    expect(savedEntries(inputs)).toHaveLength(1)
  }, 600_000)

  it('a changed configuration rebuilds only the derivations that changed', async () => {
    const inputs = freshInputs('changed')
    await coldRunSaved(inputs)
    const top = fixtureOutPath('pi-nonce')
    const closure = execFileSync('nix-store', ['-qR', top], { encoding: 'utf8' }).trim().split('\n')
    const byName = (suffix: string): string => closure.find(p => p.endsWith(suffix))!
    // The unchanged part must come from the cache, not from the local store: delete it here.
    const systemPath = byName('-system-path')
    const basePackage = closure.find(p => /-nonce-base-\d+$/.test(p))!
    execFileSync('nix-store', ['--delete', top, byName('-etc'), systemPath, basePackage], {
      env: NIX_ENV,
      stdio: 'ignore'
    })
    expect(storeHas(basePackage)).toBe(false)
    expect(storeHas(systemPath)).toBe(false)
    // A small change: the motd, which only the `etc` derivation (and so the toplevel) depends on.
    fs.writeFileSync(
      path.join(testbed().TESTBED, 'fixture', 'nonce'),
      `changed ${Date.now()} ${Math.random()}\n`
    )

    const run = await runAction(inputs, { env: service.env() })
    expect(run.exitCode).toBe(0)
    expect(run.outputs['cache-hit']).toBe('true')
    const built = [...run.log.matchAll(/building '\/nix\/store\/[a-z0-9]{32}-([^']+)\.drv'/g)]
      .map(m => m[1])
      .sort()
    expect(built).toEqual(['etc', 'nixos-system-pi3-nonce'])
    expect(run.summary).toContain('| Derivations built | 2 |')
    // system-path and the package were not rebuilt: they are back, from the cache.
    expect(storeHas(systemPath)).toBe(true)
    expect(storeHas(basePackage)).toBe(true)
    // Something new was built, so the post step saves a new entry.
    const post = await runAction(inputs, { env: service.env(), state: run.state, runnerTemp: run.runnerTemp })
    expect(post.exitCode).toBe(0)
    expect(post.log).toMatch(/Store cache saved as nda-test-changed-/)
    expect(savedEntries(inputs)).toHaveLength(2)
  }, 600_000)

  it('another runner (its own RUNNER_TEMP, a workspace at another depth) restores what one saved; no cache directory is left behind', async () => {
    const inputs = freshInputs('runners')
    const workspace = (...parts: string[]): string => {
      const dir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'nda-ws-')), ...parts)
      fs.mkdirSync(dir, { recursive: true })
      return dir
    }
    const first = workspace('deep', 'er', 'than', 'the', 'other', 'repo')
    const saved = await runAction(inputs, { env: service.env(), workspace: first })
    expect(saved.exitCode).toBe(0)
    const post = await runAction(inputs, {
      env: service.env(),
      workspace: first,
      state: saved.state,
      runnerTemp: saved.runnerTemp
    })
    expect(post.log).toMatch(/Store cache saved as nda-test-runners-/)
    expect(fs.readdirSync(first)).toEqual([])
    const top = fixtureOutPath('pi-nonce')
    execFileSync('nix-store', ['--delete', top], { env: NIX_ENV, stdio: 'ignore' })
    expect(storeHas(top)).toBe(false)

    const second = workspace('repo')
    const run = await runAction(inputs, { env: service.env(), workspace: second })
    expect(run.exitCode).toBe(0)
    expect(run.outputs['cache-hit']).toBe('true')
    expect(run.summary).toContain('| Derivations built | 0 |')
    expect(storeHas(top)).toBe(true)
    expect(fs.readdirSync(second)).toEqual([])
  }, 600_000)

  /** A fresh key pair as nix-store --generate-binary-cache-key writes it: its secret file's text. */
  const newSigningKey = (name: string): SigningKey => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-sk-'))
    try {
      execFileSync('nix-store', ['--generate-binary-cache-key', name, `${dir}/sk`, `${dir}/pk`])
      return parseSigningKey(fs.readFileSync(`${dir}/sk`, 'utf8')) as SigningKey
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }
  /** A deploy (switch, to pi) of what `inputs` builds. */
  const deployTo = (inputs: Record<string, string>) =>
    runAction(
      { ...inputs, mode: 'switch', 'target-host': testbed().TESTBED_PI, 'jump-host': testbed().TESTBED_JUMP },
      { env: service.env() }
    )
  const warnings = (log: string): string[] =>
    log.split('\n').filter(l => l.startsWith('::warning') && !/No GitHub Actions cache/.test(l))

  it('with signing-key, an unsigned entry written under its cache keys is refused; what the key signed restores into a deploy', async () => {
    const key = newSigningKey('nda-cache-test-1')
    const inputs = { ...freshInputs('signed'), 'signing-key': key.secret }
    // Someone who can write to the cache (no key) saves an entry where the signed runs look.
    const forged = { ...inputs, 'signing-key': '', 'cache-key': `nda-test-signed-signed-${key.fingerprint}` }
    await coldRunSaved(forged)
    deleteBuilt()

    const refused = await runAction(inputs, { env: service.env() })
    expect(refused.exitCode).toBe(0)
    expect(refused.outputs['cache-hit']).toBe('false')
    const forgedKey = savedEntries(forged)[0].key
    expect(warnings(refused.log)).toEqual([
      expect.stringContaining(`entry ${forgedKey} holds paths not signed by signing-key (nda-cache-test-1)`)
    ])
    expect(refused.summary).toMatch(/\| Derivations built \| [1-9]/)
    // Its post step saves the system it built, signed, under the signed keys (the newest entry there).
    const post = await runAction(inputs, {
      env: service.env(),
      state: refused.state,
      runnerTemp: refused.runnerTemp
    })
    expect(post.log).toMatch(new RegExp(`Store cache saved as nda-test-signed-signed-${key.fingerprint}-`))
    const top = deleteBuilt()

    const deploy = await deployTo(inputs)
    expect(deploy.exitCode).toBe(0)
    expect(deploy.outputs['cache-hit']).toBe('true')
    expect(deploy.summary).toContain('| Derivations built | 0 |')
    expect(deploy.log).toMatch(/Restored \d+ store paths .*, each verified against nda-cache-test-1/)
    expect(storeHas(top)).toBe(true)
    expect(warnings(deploy.log)).toEqual([])
  }, 900_000)

  it('a deploy without signing-key restores nothing, even with an entry there, and says why', async () => {
    const inputs = freshInputs('unsigned-deploy')
    await coldRunSaved(inputs)
    const top = deleteBuilt()
    const deploy = await deployTo(inputs)
    expect(deploy.exitCode).toBe(0)
    expect(deploy.outputs['cache-hit']).toBe('false')
    expect(deploy.log).not.toMatch(/Restored \d+ store paths/)
    expect(deploy.summary).toMatch(
      /\| Store cache \| not restored: a deploy imports only entries signed by signing-key/
    )
    expect(deploy.summary).toMatch(/\| Derivations built \| [1-9]/)
    expect(storeHas(top)).toBe(true)
  }, 600_000)

  it("an entry someone else wrote writes nothing outside the cache directory when it is unpacked (@actions/cache's own tar -P would)", async () => {
    const inputs = freshInputs('unpack')
    await coldRunSaved(inputs)
    // The entry as a cache writer could replace it: a file by absolute name, and one above the workspace.
    const outside = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-cacheract-'))
    const work = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-ws-'))
    const workspace = path.join(work, 'repo')
    fs.mkdirSync(workspace)
    const tar = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'nda-entry-')), 'entry.tar')
    execFileSync('python3', [
      '-c',
      'import io,sys,tarfile\nwith tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT) as t:\n' +
        ' for n in sys.argv[2:]:\n  i = tarfile.TarInfo(n); b = b"pwned"; i.size = len(b); t.addfile(i, io.BytesIO(b))',
      tar,
      `${outside}/absolute`,
      '../above-the-workspace',
      '.nix-deploy-action-store-cache/x.narinfo'
    ])
    execFileSync('zstd', ['-q', '--rm', tar, '-o', `${tar}.zst`])
    await service.replaceArchive(savedEntries(inputs)[0].key, fs.readFileSync(`${tar}.zst`))
    deleteBuilt()

    try {
      const run = await runAction(inputs, { env: service.env(), workspace })
      expect(run.exitCode).toBe(0)
      expect(fs.readdirSync(outside)).toEqual([])
      expect(fs.readdirSync(work)).toEqual(['repo'])
      expect(run.outputs['cache-hit']).toBe('false')
      expect(run.summary).toMatch(/\| Derivations built \| [1-9]/)
    } finally {
      fs.rmSync(outside, { recursive: true, force: true })
      fs.rmSync(work, { recursive: true, force: true })
    }
  }, 600_000)

  it('an entry with a directory named as a .narinfo: nothing restored, a warning, the build starts cold and the run succeeds', async () => {
    const inputs = freshInputs('unreadable')
    await coldRunSaved(inputs)
    const tar = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'nda-entry-')), 'entry.tar')
    execFileSync('python3', [
      '-c',
      'import sys,tarfile\nwith tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT) as t:\n' +
        ' for n in sys.argv[2:]:\n  i = tarfile.TarInfo(n); i.type = tarfile.DIRTYPE; i.mode = 0o755; t.addfile(i)',
      tar,
      '.nix-deploy-action-store-cache',
      '.nix-deploy-action-store-cache/a.narinfo'
    ])
    execFileSync('zstd', ['-q', '--rm', tar, '-o', `${tar}.zst`])
    await service.replaceArchive(savedEntries(inputs)[0].key, fs.readFileSync(`${tar}.zst`))
    deleteBuilt()
    const run = await runAction(inputs, { env: service.env() })
    if (run.exitCode !== 0) console.log(run.log.slice(-3000))
    expect(run.exitCode).toBe(0)
    expect(run.outputs['cache-hit']).toBe('false')
    expect(run.summary).toMatch(/\| Derivations built \| [1-9]/)
    expect(warnings(run.log)).toEqual([expect.stringMatching(/nothing restored/)])
  }, 600_000)

  it('without a cache service: one warning, and the build goes on', async () => {
    const inputs = freshInputs('none')
    const run = await runAction(inputs)
    expect(run.exitCode).toBe(0)
    expect(run.log.match(/::warning::No GitHub Actions cache service here/g)).toHaveLength(1)
    expect(run.log).not.toMatch(/::warning::.*(Cache service|ACTIONS_)/)
  }, 300_000)
})

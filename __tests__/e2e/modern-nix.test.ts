import { execFileSync } from 'child_process'
import * as fs from 'fs'
import * as path from 'path'
import {
  deployInputs,
  describeE2E,
  fixtureOutPath,
  modernNixUser,
  QEMU_AARCH64_ENTRY,
  qemuAarch64Enabled,
  ROOT,
  runAction,
  testbed
} from './harness'

/**
 * The runner on the Nix users run (issue #20): Nix 2.26 with a nix-daemon whose sandbox is on, the
 * action run by an unprivileged user (testbed/modern-nix.sh). An aarch64 system builds through
 * QEMU binfmt inside the daemon's sandbox for a trusted user; for an untrusted one the daemon
 * ignores the action's extra-platforms, and the run fails before building, naming that setting and
 * where to set it, and following that advice makes it build. (The deploy, PR, network and cache
 * suites run whole on this Nix too: the e2e-modern project.)
 */
describeE2E('the runner on Nix 2.26 with a sandboxed nix-daemon and an unprivileged user', () => {
  const modern = (): string => testbed().TESTBED_MODERN_NIX
  const daemonLog = (): string => path.join(modern(), 'daemon.log')
  const localConf = (): string => path.join(modern(), 'etc', 'local.conf')
  const restartDaemon = (): void => {
    execFileSync('bash', [path.join(ROOT, 'testbed', 'modern-nix.sh'), 'restart'], { stdio: 'ignore' })
  }
  /** A build of the probe system this machine has never built (a new ./nonce). */
  const freshProbe = (tag: string): Record<string, string> => {
    fs.writeFileSync(path.join(testbed().TESTBED, 'fixture', 'nonce'), `modern ${tag} ${Math.random()}\n`)
    return deployInputs('pi-sandbox-probe', {
      mode: 'build',
      'target-host': '',
      'jump-host': '',
      'ssh-private-key': '',
      'known-hosts': '',
      'nix-options': ''
    })
  }
  /** The clients the daemon accepted since `offset` of its log: user and the trust it gave. */
  const connections = (offset: number): Array<{ user: string; trusted: boolean }> =>
    fs
      .readFileSync(daemonLog(), 'utf8')
      .slice(offset)
      .split('\n')
      .map(l => /^accepted connection from pid \d+, user (\S+)( \(trusted\))?$/.exec(l))
      .filter((m): m is RegExpExecArray => m !== null)
      .map(m => ({ user: m[1], trusted: m[2] !== undefined }))
  const logSize = (): number => fs.statSync(daemonLog()).size
  /** What the probe package's builder saw, from the built system's closure. */
  const probeSaw = (top: string): string => {
    const closure = execFileSync('nix-store', ['-qR', top], { encoding: 'utf8' }).split('\n')
    const pkg = closure.find(p => /-sandbox-probe-[0-9a-f]{12}$/.test(p))
    if (!pkg) throw new Error(`no sandbox-probe package in the closure of ${top}`)
    return fs.readFileSync(path.join(pkg, 'share', 'sandbox'), 'utf8').trim()
  }
  const valid = (p: string): boolean => {
    try {
      execFileSync('nix-store', ['--check-validity', p], { stdio: 'ignore' })
      return true
    } catch {
      return false
    }
  }
  const modernNix = (name: 'nda-runner' | 'nda-untrusted', args: string[]): string => {
    const { uid, gid, home } = modernNixUser(name)
    return execFileSync(path.join(modern(), 'bin', 'nix'), args, {
      encoding: 'utf8',
      uid,
      gid,
      cwd: '/',
      env: { PATH: process.env.PATH, HOME: home }
    }).trim()
  }

  afterAll(() => {
    if (fs.existsSync(localConf())) {
      fs.rmSync(localConf())
      restartDaemon()
    }
  })

  it('the daemon is Nix 2.26 with its sandbox on, and trusts nda-runner but not nda-untrusted', () => {
    const info = (user: 'nda-runner' | 'nda-untrusted'): { version: string; trusted: number } =>
      JSON.parse(modernNix(user, ['store', 'info', '--json'])) as { version: string; trusted: number }
    expect(info('nda-runner')).toMatchObject({ version: '2.26.3', trusted: 1 })
    expect(info('nda-untrusted')).toMatchObject({ version: '2.26.3', trusted: 0 })
    expect(modernNix('nda-runner', ['config', 'show', 'sandbox'])).toBe('true')
  })

  it('as a trusted user, an aarch64 system builds through QEMU inside the sandbox', async () => {
    // The probe can tell: built by Debian's Nix 2.8 with its sandbox off, the builder sees the store's database.
    fs.writeFileSync(path.join(testbed().TESTBED, 'fixture', 'nonce'), `control ${Math.random()}\n`)
    const control = execFileSync(
      'nix',
      [
        '--extra-experimental-features',
        'nix-command flakes',
        'build',
        '--no-link',
        '--json',
        '--option',
        'sandbox',
        'false',
        `${testbed().TESTBED_FIXTURE}#nixosConfigurations.pi-sandbox-probe.config.system.build.toplevel`
      ],
      {
        encoding: 'utf8',
        env: { ...process.env, NIX_CONFIG: 'substituters =\nextra-platforms = aarch64-linux' }
      }
    )
    expect(probeSaw((JSON.parse(control) as Array<{ outputs: { out: string } }>)[0].outputs.out)).toBe(
      'runner-visible'
    )

    const inputs = freshProbe('trusted')
    const top = fixtureOutPath('pi-sandbox-probe')
    expect(valid(top)).toBe(false)
    const offset = logSize()
    const run = await runAction(inputs, { nix: 'modern', user: modernNixUser('nda-runner') })
    expect(run.exitCode).toBe(0)
    expect(run.summary).toMatch(/\| Derivations built \| [1-9]/)
    expect(probeSaw(top)).toBe('sandboxed')
    const seen = connections(offset)
    expect(seen.length).toBeGreaterThan(0)
    expect(new Set(seen.map(c => `${c.user} ${c.trusted}`))).toEqual(new Set(['nda-runner true']))
  }, 300_000)

  it('binfmt: auto registers QEMU through passwordless sudo (as on a GitHub-hosted runner), with the F flag the sandbox needs', async () => {
    execFileSync('update-binfmts', ['--disable', 'qemu-aarch64'])
    try {
      expect(qemuAarch64Enabled()).toBe(false)
      const inputs = freshProbe('sudo-binfmt')
      const top = fixtureOutPath('pi-sandbox-probe')
      const run = await runAction(inputs, { nix: 'modern', user: modernNixUser('nda-runner') })
      expect(run.exitCode).toBe(0)
      expect(qemuAarch64Enabled()).toBe(true)
      // F: the kernel opens the interpreter at registration, so it runs inside the sandbox.
      expect(fs.readFileSync(QEMU_AARCH64_ENTRY, 'utf8')).toMatch(/^flags: [A-Z]*F/m)
      expect(probeSaw(top)).toBe('sandboxed')
    } finally {
      if (!qemuAarch64Enabled()) execFileSync('update-binfmts', ['--enable', 'qemu-aarch64'])
    }
  }, 300_000)

  it('as an untrusted user, the run fails before building, naming the setting the daemon ignores and where to set it', async () => {
    const inputs = freshProbe('untrusted')
    const top = fixtureOutPath('pi-sandbox-probe')
    const offset = logSize()
    const run = await runAction(inputs, { nix: 'modern', user: modernNixUser('nda-untrusted') })
    expect(run.exitCode).toBe(1)
    expect(run.outputs.result).toBe('failed')
    const annotation = run.log.split('\n').find(l => l.startsWith('::error title='))
    expect(annotation).toMatch(
      /nda-untrusted is not in its trusted-users, so it ignores the action's extra-platforms = aarch64-linux/
    )
    expect(annotation).toMatch(/Add "extra-platforms = aarch64-linux" to the daemon's nix.conf/)
    // The summary escapes HTML: the quotes are entities there.
    expect(run.summary).toMatch(
      /\*\*What to do:\*\* Add &#34;extra-platforms = aarch64-linux&#34; to the daemon&#39;s nix.conf/
    )
    // The system was not built.
    expect(valid(top)).toBe(false)
    const seen = connections(offset)
    expect(seen.length).toBeGreaterThan(0)
    expect(new Set(seen.map(c => `${c.user} ${c.trusted}`))).toEqual(new Set(['nda-untrusted false']))
  }, 300_000)

  it('following that advice (extra-platforms in the daemon nix.conf), the untrusted user builds in the sandbox', async () => {
    fs.writeFileSync(localConf(), 'extra-platforms = aarch64-linux\n')
    restartDaemon()
    try {
      // And nix-options the daemon ignores for this user are named in a warning.
      const inputs = { ...freshProbe('advised'), 'nix-options': 'keep-outputs = true\nmax-silent-time = 600' }
      const top = fixtureOutPath('pi-sandbox-probe')
      const offset = logSize()
      const run = await runAction(inputs, { nix: 'modern', user: modernNixUser('nda-untrusted') })
      expect(run.exitCode).toBe(0)
      expect(probeSaw(top)).toBe('sandboxed')
      const warnings = run.log.split('\n').filter(l => l.startsWith('::warning::nix-options'))
      expect(warnings).toHaveLength(1)
      expect(warnings[0]).toMatch(
        /^::warning::nix-options keep-outputs: ignored by the nix-daemon, which does not trust nda-untrusted/
      )
      expect(new Set(connections(offset).map(c => `${c.user} ${c.trusted}`))).toEqual(
        new Set(['nda-untrusted false'])
      )
    } finally {
      fs.rmSync(localConf())
      restartDaemon()
    }
  }, 300_000)
})

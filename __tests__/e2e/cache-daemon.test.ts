import { ChildProcess, execFileSync, spawn } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { CacheService } from './cache-service'
import { deployInputs, describeE2E, fixtureOutPath, runAction, testbed } from './harness'

/**
 * The store cache with a multi-user Nix (nix-daemon), the action running as an ordinary user as on
 * a GitHub-hosted or most self-hosted runners. Building and saving work for any user; restoring
 * (importing unsigned paths) needs the user in trusted-users: without it the run warns once and
 * builds cold, with it the warm run builds nothing. (docs/store-cache.md.)
 */
const SOCKET = '/nix/var/nix/daemon-socket/socket'
const USER = 'nda-runner'

describeE2E('the store cache with a multi-user Nix (nix-daemon) and an unprivileged runner user', () => {
  const service = new CacheService()
  const runnerTemp = path.join(os.tmpdir(), 'nda-daemon-runner-temp')
  let daemon: ChildProcess | undefined
  let user: { uid: number; gid: number; home: string }
  let inputs: Record<string, string>
  /** A configuration this machine has never built, with a package it has never built, under its own cache key. */
  const freshInputs = (tag: string): Record<string, string> => {
    fs.writeFileSync(path.join(testbed().TESTBED, 'fixture', 'nonce-base'), `${Date.now()}`)
    fs.writeFileSync(
      path.join(testbed().TESTBED, 'fixture', 'nonce'),
      `daemon test ${tag} ${Math.random()}\n`
    )
    return deployInputs('pi-nonce', {
      mode: 'build',
      'target-host': '',
      'jump-host': '',
      'ssh-private-key': '',
      'known-hosts': '',
      'cache-key': `nda-daemon-${tag}`
    })
  }

  const startDaemon = async (trusted: string): Promise<void> => {
    daemon?.kill()
    await new Promise(r => setTimeout(r, 300))
    fs.rmSync(SOCKET, { force: true })
    daemon = spawn('nix-daemon', [], {
      env: {
        ...process.env,
        NIX_CONFIG: `substituters =\nextra-platforms = aarch64-linux\nsandbox = false\ntrusted-users = ${trusted}`
      },
      stdio: 'ignore'
    })
    for (let i = 0; i < 100 && !fs.existsSync(SOCKET); i++) await new Promise(r => setTimeout(r, 100))
    expect(fs.existsSync(SOCKET)).toBe(true)
  }
  const deleteBuilt = (): void => {
    const top = fixtureOutPath('pi-nonce')
    const closure = execFileSync('nix-store', ['-qR', top], { encoding: 'utf8' }).trim().split('\n')
    // What this configuration alone has (other fixtures share busybox, the kernel, the boot loader).
    const own = closure.filter(p => /-(nonce-base-\d+|system-path|etc|nixos-system-pi3-nonce)$/.test(p))
    execFileSync('nix-store', ['--delete', ...own], {
      stdio: 'ignore',
      env: { ...process.env, NIX_CONFIG: 'substituters =' }
    })
  }
  const run = (state?: Record<string, string>) =>
    runAction(inputs, { env: { ...service.env(), NIX_REMOTE: 'daemon' }, runnerTemp, user, state })

  beforeAll(async () => {
    const id = (flag: string): number => Number(execFileSync('id', [flag, USER], { encoding: 'utf8' }).trim())
    // Debian's nix-daemon socket is for the group nix-users (its directory is 0770): run with it as
    // the primary group, as a runner user added to nix-users would (spawn drops other groups).
    let gid = id('-g')
    try {
      gid = Number(execFileSync('getent', ['group', 'nix-users'], { encoding: 'utf8' }).split(':')[2])
    } catch {
      // No nix-users group (not Debian's packaging): the socket is open to everyone.
    }
    user = { uid: id('-u'), gid, home: path.join(testbed().TESTBED, 'runner-home') }
    fs.mkdirSync(user.home, { recursive: true })
    fs.chownSync(user.home, user.uid, user.gid)
    fs.rmSync(runnerTemp, { recursive: true, force: true })
    fs.mkdirSync(runnerTemp, { recursive: true })
    await service.start()
  }, 120_000)
  afterAll(async () => {
    daemon?.kill()
    fs.rmSync(SOCKET, { force: true })
    await service.stop()
  }, 60_000)

  it('an untrusted user builds and saves; restoring warns once that it needs trusted-users, and builds cold', async () => {
    await startDaemon('root')
    inputs = freshInputs('untrusted')
    const cold = await run()
    expect(cold.exitCode).toBe(0)
    expect(cold.summary).toMatch(/\| Derivations built \| [1-9]/)
    const post = await run(cold.state)
    expect(post.log).toMatch(/Store cache saved as nda-daemon-/)

    deleteBuilt()
    const warm = await run()
    expect(warm.exitCode).toBe(0)
    const warnings = warm.log
      .split('\n')
      .filter(l => l.startsWith('::warning') && !/No GitHub Actions cache/.test(l))
    expect(warnings).toHaveLength(1)
    expect(warnings[0]).toMatch(
      /Importing the restored store cache failed, so the build starts cold.*trusted-users/
    )
    expect(warm.outputs['cache-hit']).toBe('false')
    expect(warm.summary).toMatch(/\| Derivations built \| [1-9]/)
    await run(warm.state)
  }, 600_000)

  it('with the user in trusted-users, a warm run restores through the daemon and builds nothing', async () => {
    await startDaemon(`root ${USER}`)
    inputs = freshInputs('trusted')
    const cold = await run()
    expect(cold.exitCode).toBe(0)
    expect((await run(cold.state)).log).toMatch(/Store cache saved as nda-daemon-trusted-/)
    deleteBuilt()
    const warm = await run()
    expect(warm.exitCode).toBe(0)
    expect(warm.outputs['cache-hit']).toBe('true')
    expect(warm.summary).toContain('| Derivations built | 0 |')
    await run(warm.state)
  }, 600_000)
})

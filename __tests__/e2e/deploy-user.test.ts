import { spawnSync } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { deployPlanProblems } from '../../src/nix/deploy-plan'
import { gateCommand, GateVerb } from '../../src/target/gate'
import {
  assertNothingLeftOnPi,
  deployInputs,
  describeE2E,
  fixturePath,
  jumpHost,
  key,
  onPi,
  piExec,
  piState,
  resetPi,
  runAction,
  startCacheServer,
  testbed
} from './harness'

/**
 * A deploy key that is not root (nixos/deploy-user.nix): the systemd Pi's `nix-deploy`, whose SSH
 * key runs only the gate (testbed/pi-os.sh sets it up as the module does, with the module's own
 * gate.sh and root.sh), its Nix 2.26 daemon trusting only the testbed's deploy signing key. The
 * action finds the gate by itself (target-user: nix-deploy), copies a signed binary cache, and
 * does everything root does through nda-root; what the key alone can do is tried by hand.
 */
const GATE_KEY = (): string => path.join(testbed().TESTBED_KEYS, 'gate')

/** Inputs for a deploy of fixture `config` to spi as the deploy user. */
const gated = (config: string, extra: Record<string, string> = {}): Record<string, string> =>
  deployInputs(config, {
    'target-host': testbed().TESTBED_SPI,
    'target-user': 'nix-deploy',
    // The jump host's user would default to the target's; the testbed's takes root.
    'jump-host': jumpHost(),
    'ssh-private-key': key('gate'),
    'signing-key': key('gate-signing.secret'),
    ...extra
  })

/** ssh and scp options for the deploy user's key alone (OpenSSH, the testbed's host names and keys). */
const KEY_ALONE = (): string[] => [
  '-F',
  testbed().TESTBED_SSH_CONFIG,
  '-o',
  'IdentitiesOnly=yes',
  '-o',
  'BatchMode=yes',
  '-i',
  GATE_KEY()
]

/** ssh to spi (straight over its LAN link) as the deploy user with its key alone. */
function asDeployUser(command: string | undefined, opts: { stdin?: string; args?: string[] } = {}) {
  const r = spawnSync(
    'ssh',
    [
      ...KEY_ALONE(),
      '-l',
      'nix-deploy',
      ...(opts.args ?? []),
      'spi-direct',
      ...(command === undefined ? [] : [command])
    ],
    { input: opts.stdin ?? '', encoding: 'utf8', timeout: 60_000 }
  )
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

const gate = (verb: GateVerb, args: string[] = [], stdin = '') =>
  asDeployUser(gateCommand(verb, args), { stdin })

describeE2E('a deploy key that is not root: the deploy user and its gate (nixos/deploy-user.nix)', () => {
  beforeEach(() => resetPi('spi'), 120_000)

  it('deploys, redeploys and runs the listed health checks through the gate, signed; nothing as root but through nda-root', async () => {
    const gen0 = piState('spi').current
    const first = await runAction(
      gated('spi-gated-1', { 'health-checks': 'test -e /run/current-system/nixos-version' })
    )
    if (first.exitCode !== 0) console.log(first.log.slice(-5000))
    expect(first.exitCode).toBe(0)
    expect(first.outputs.result).toBe('deployed')
    const one = fixturePath('spi-gated-1')
    expect(piState('spi')).toMatchObject({ current: one, profile: one })
    // Imported by the daemon for an untrusted user: each path carries the deploy key's signature.
    expect(onPi(`nix --extra-experimental-features nix-command path-info --json ${one}`, 'spi')).toContain(
      'nda-gate-1:'
    )
    const second = await runAction(gated('spi-gated-2'))
    expect(second.exitCode).toBe(0)
    expect(piState('spi').current).toBe(fixturePath('spi-gated-2'))
    expect(piState('spi').generations).toHaveLength(3)
    // The lock is free, and nothing of the deploys runs.
    expect(onPi('ls /nix/var/nix-deploy-action/lock 2>/dev/null | wc -l', 'spi')).toBe('0')
    await assertNothingLeftOnPi([], 'spi')
    expect(gen0).not.toBe(one)
  }, 300_000)

  it('rolls back by itself through the gate when the new system cuts SSH (magic rollback)', async () => {
    const before = piState('spi')
    const run = await runAction(gated('spi-gated-no-ssh', { 'confirm-timeout': '20' }))
    expect(run.exitCode).toBe(1)
    expect(run.outputs.result).toBe('rolled-back')
    expect(piState('spi')).toMatchObject({ current: before.current, profile: before.profile })
  }, 300_000)

  it('a NixOps network through the gate: the module evaluated, the key uploaded, rebooted on trial and confirmed, the listed check run', async () => {
    const fixture = (...p: string[]): string => path.join(testbed().TESTBED, 'fixture', ...p)
    const { flake: _flake, ...inputs } = gated('unused')
    const id = piExec(['cat', '/proc/sys/kernel/random/boot_id'], 'spi')
    const run = await runAction({
      ...inputs,
      'target-host': '',
      'target-user': '',
      network: fixture('network', 'spi-gated.nix'),
      nixpkgs: fixture('nixpkgs'),
      reboot: 'auto',
      'health-checks': 'test -s /run/keys/wifi-psk'
    })
    if (run.exitCode !== 0) console.log(run.log.slice(-6000))
    expect(run.exitCode).toBe(0)
    expect(run.outputs).toMatchObject({ result: 'deployed', 'needs-reboot': 'true' })
    expect(piExec(['cat', '/proc/sys/kernel/random/boot_id'], 'spi')).not.toBe(id)
    const top = run.outputs['store-path']
    expect(piExec(['readlink', '/run/booted-system'], 'spi')).toBe(top)
    expect(run.summary).toContain('(boot trial confirmed)')
    expect(onPi(`cat ${top}/etc/nix-deploy-action/health-checks`, 'spi')).toBe('test -s /run/keys/wifi-psk')
    expect(onPi('stat -c "%U:%G %a" /run/keys/wifi-psk; cat /run/keys/wifi-psk', 'spi')).toBe(
      'root:root 640\nspi-gated-wifi-secret-7731'
    )
  }, 900_000)

  it("a deploy plan's shard through the gate: the Pi copies the signed closure from the plan's cache itself, the shard job has no signing-key; a plan whose system lacks the module is refused before anything", async () => {
    const work = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-gated-shard-'))
    const cache = await startCacheServer(path.join(work, 'cache'), path.join(work, 'deny'))
    // spi's one way to the cache: the jump host's address on the runner's link, through its gateway.
    piRoute('replace')
    try {
      const build = async (config: string) => {
        const run = await runAction(
          gated(config, {
            mode: 'build',
            'publish-to': cache.uri,
            shards: '1',
            'health-checks': 'test -e /run/current-system/nixos-version'
          })
        )
        if (run.exitCode !== 0) console.log(run.log.slice(-5000))
        expect(run.exitCode).toBe(0)
        const { plan, problems } = deployPlanProblems(run.outputs['deploy-plan'])
        expect(problems).toEqual([])
        return { text: run.outputs['deploy-plan'], plan: plan! }
      }
      // The shard job: the plan and what connects, no signing-key, no target.
      const shard = (text: string) => {
        const {
          flake: _flake,
          'target-host': _host,
          'target-user': _user,
          'signing-key': _signing,
          ...connection
        } = gated('unused', { 'health-checks': 'test -e /run/current-system/nixos-version' })
        return runAction({ ...connection, 'deploy-plan': text, shard: '1' })
      }
      const narsFromSpi = () =>
        cache
          .requests()
          .filter(r => r.client === testbed().TESTBED_SPI && r.path.startsWith('/nar/') && r.status === 200)
      const valid = (p: string) =>
        piExec(
          ['sh', '-c', `nix-store --check-validity ${p} 2>/dev/null && echo valid || echo invalid`],
          'spi'
        )

      const { text, plan } = await build('spi-gated-2')
      const top = plan.machines[0].storePath
      expect(plan.machines[0]).toMatchObject({
        user: 'nix-deploy',
        deployUser: {
          enabled: true,
          healthChecks: expect.arrayContaining(['test -e /run/current-system/nixos-version'])
        }
      })
      expect(valid(top)).toBe('invalid')
      const run = await shard(text)
      if (run.exitCode !== 0) console.log(run.log.slice(-5000))
      expect(run.exitCode).toBe(0)
      const results = JSON.parse(run.outputs.results) as Record<string, Record<string, string>>
      expect(Object.values(results)).toEqual([
        expect.objectContaining({ result: 'deployed', 'store-path': top, 'copied-bytes': '0' })
      ])
      expect(piState('spi')).toMatchObject({ current: top, profile: top })
      // Fetched by spi itself, and taken by its daemon signed by the deploy key.
      expect(narsFromSpi().length).toBeGreaterThan(0)
      // The closure named, not sent: the gate listed it from the cache (the system's .narinfo read
      // for that, as the deploy user with a fresh cache of its own), then fetched it (read again).
      const topInfo = `/${path.basename(top).slice(0, 32)}.narinfo`
      expect(
        cache
          .requests()
          .filter(
            r =>
              r.client === testbed().TESTBED_SPI &&
              r.method === 'GET' &&
              r.path === topInfo &&
              r.status === 200
          ).length
      ).toBe(2)
      expect(onPi(`nix --extra-experimental-features nix-command path-info --json ${top}`, 'spi')).toContain(
        'nda-gate-1:'
      )
      // The record nda-root wrote under the lock, which the fleet's last job reads.
      const record = piExec(['cat', '/nix/var/nix-deploy-action/plan-record'], 'spi')
      expect(record).toContain(`plan=${plan.id}\n`)
      expect(record).toMatch(/^state=deployed$/m)
      const {
        flake: _f,
        'target-host': _h,
        'target-user': _u,
        'signing-key': _s,
        ...connect
      } = gated('unused')
      const report = await runAction({ ...connect, 'deploy-plan': text, mode: 'report' })
      if (report.exitCode !== 0) console.log(report.log.slice(-5000))
      expect(report.exitCode).toBe(0)
      expect(
        Object.values(JSON.parse(report.outputs.results) as Record<string, Record<string, string>>)
      ).toEqual([expect.objectContaining({ result: 'deployed', 'store-path': top })])

      // A plan whose system would lock the deploy user out: refused before the Pi fetches anything.
      const bare = await build('spi-gated-without-module')
      expect(bare.plan.machines[0].deployUser).toEqual({ enabled: false, healthChecks: [] })
      cache.clear()
      const refused = await shard(bare.text)
      expect(refused.exitCode).toBe(1)
      expect(refused.log).toMatch(/does not have services\.nix-deploy-action\.deployUser/)
      expect(narsFromSpi()).toEqual([])
      expect(valid(bare.plan.machines[0].storePath)).toBe('invalid')
      expect(piState('spi')).toMatchObject({ current: top, profile: top })
      expect(onPi('ls /nix/var/nix-deploy-action/lock 2>/dev/null | wc -l', 'spi')).toBe('0')

      // spi cut off from the cache: without signing-key the runner cannot copy for it (refused,
      // spi unchanged); with it, what spi could not fetch goes through the runner, signed. There
      // the cache takes spi's requests and never answers them: asked once (the gate's listing of
      // the closure), spi is not asked to fetch from it too (another 30 s without a byte).
      piRoute('delete')
      const other = await build('spi-gated-1')
      const otherTop = other.plan.machines[0].storePath
      const unsigned = await shard(other.text)
      expect(unsigned.exitCode).toBe(1)
      expect(unsigned.log).toMatch(
        /did not fetch \d+ of the closure's paths from \S+, and without signing-key/
      )
      expect(piState('spi')).toMatchObject({ current: top, profile: top })
      piRoute('replace')
      fs.writeFileSync(path.join(work, 'deny'), `stall ${testbed().TESTBED_SPI}\n`)
      cache.clear()
      const signed = await runAction({
        ...gated('unused'),
        flake: '',
        'target-host': '',
        'target-user': '',
        'deploy-plan': other.text,
        shard: '1',
        'health-checks': 'test -e /run/current-system/nixos-version'
      })
      if (signed.exitCode !== 0) console.log(signed.log.slice(-5000))
      expect(signed.exitCode).toBe(0)
      const copied = Object.values(
        JSON.parse(signed.outputs.results) as Record<string, Record<string, string>>
      )
      expect(copied).toEqual([expect.objectContaining({ result: 'deployed', 'store-path': otherTop })])
      expect(Number(copied[0]['copied-bytes'])).toBeGreaterThan(0)
      expect(piState('spi')).toMatchObject({ current: otherTop, profile: otherTop })
      const held = cache.requests().filter(r => r.client === testbed().TESTBED_SPI && r.status === 0)
      expect(held.map(r => r.path)).toEqual(['/nix-cache-info'])
    } finally {
      piRoute('delete')
      cache.close()
      fs.rmSync(work, { recursive: true, force: true })
    }
  }, 600_000)

  it('with the SSH key alone: no command, shell, PTY, scp, sftp or forwarding', () => {
    for (const command of [
      'id',
      'sh -c id',
      'nix-store --version',
      'scp -t /tmp',
      '/usr/lib/openssh/sftp-server'
    ]) {
      const r = asDeployUser(command)
      expect({ command, status: r.status }).toEqual({ command, status: 64 })
      expect(r.stderr).toContain('nix-deploy-action-gate: refused')
    }
    // A login shell (no command) and one with a PTY asked for.
    expect(asDeployUser(undefined).status).toBe(64)
    const tty = asDeployUser(undefined, { args: ['-tt'] })
    expect(tty.status).not.toBe(0)
    expect(tty.stderr).toContain('PTY allocation request failed')
    // sshd refuses a forwarding (restrict, DisableForwarding): -W is a forwarding to the Pi's own sshd.
    expect(asDeployUser(undefined, { args: ['-W', '127.0.0.1:22'] }).status).not.toBe(0)
    const scp = spawnSync('scp', [...KEY_ALONE(), '/etc/hostname', 'nix-deploy@spi-direct:/tmp/x'], {
      encoding: 'utf8',
      timeout: 60_000
    })
    expect(scp.status).not.toBe(0)
    expect(piExec(['sh', '-c', 'test -e /tmp/x && echo there || echo none'], 'spi')).toBe('none')
  }, 120_000)

  it('refuses an unsigned copy, one signed by another key, a system without the module, a content-addressed system and a path outside the store; the Pi keeps what it ran', async () => {
    const before = piState('spi')
    // No signing-key: refused before anything changes on the target.
    const unsigned = await runAction(gated('spi-gated-1', { 'signing-key': '' }))
    expect(unsigned.exitCode).toBe(1)
    expect(unsigned.log).toMatch(/imports only signed store paths, and signing-key is not set/)
    // Signed by another key: the daemon refuses the import, and the error names the key it wanted.
    const other = await runAction(gated('spi-gated-1', { 'signing-key': key('other-signing.secret') }))
    expect(other.exitCode).toBe(1)
    expect(other.log).toMatch(/signed by nda-gate-1/)
    expect(
      piExec(
        [
          'sh',
          '-c',
          `nix-store --check-validity ${fixturePath('spi-gated-1')} 2>/dev/null && echo valid || echo invalid`
        ],
        'spi'
      )
    ).toBe('invalid')
    // A system without the module: refused by the runner before the copy.
    const bare = await runAction(gated('spi-gated-without-module'))
    expect(bare.exitCode).toBe(1)
    expect(bare.log).toMatch(/does not have services\.nix-deploy-action\.deployUser/)
    expect(piState('spi')).toMatchObject({ current: before.current, profile: before.profile })
    expect(piState('spi').generations).toEqual(before.generations)
    expect(onPi('ls /nix/var/nix-deploy-action/lock 2>/dev/null | wc -l', 'spi')).toBe('0')

    // nda-root itself, asked by hand with the key alone. The bare system put in the store by root
    // (valid, not signed by the deploy key): refused by name of the key it wanted.
    const bareTop = fixturePath('spi-gated-without-module')
    execNixCopyAsRoot(bareTop)
    const dir = '/run/nix-deploy-action/by-hand'
    const start = (top: string) =>
      gate('start-agent', [
        '--dir',
        dir,
        '--toplevel',
        top,
        '--action',
        'switch',
        '--activation-timeout',
        '60'
      ])
    const notSigned = start(bareTop)
    expect(notSigned.status).toBe(64)
    expect(notSigned.stderr).toContain(`nda-root: refused: ${bareTop} is not signed by nda-gate-1`)
    // A content-addressed "system" (any user can add one, and it needs no signature).
    const ca = piExec(
      [
        'sh',
        '-c',
        'd=$(mktemp -d) && mkdir -p $d/bin && printf "#!/bin/sh\\ntouch /tmp/nda-pwned\\n" > $d/bin/switch-to-configuration && chmod +x $d/bin/switch-to-configuration && nix --extra-experimental-features nix-command store add-path --name nixos-system-evil $d'
      ],
      'spi'
    )
    const caRefused = start(ca)
    expect(caRefused.status).toBe(64)
    expect(caRefused.stderr).toContain('is content-addressed')
    const outside = start('/tmp/nda-system')
    expect(outside.status).toBe(64)
    expect(outside.stderr).toContain('is not a NixOS system in the store')
    expect(piExec(['sh', '-c', 'test -e /tmp/nda-pwned && echo pwned || echo safe'], 'spi')).toBe('safe')
    expect(piState('spi')).toMatchObject({ current: before.current, profile: before.profile })
  }, 600_000)
})

/** spi's route to the jump host's address on the runner's link (where the tests' cache listens). */
function piRoute(op: 'replace' | 'delete'): void {
  const r = spawnSync(
    'ip',
    ['-n', 'nda-spi', 'route', op, `${testbed().TESTBED_JUMP}/32`, 'via', '10.99.5.1'],
    {
      encoding: 'utf8'
    }
  )
  if (r.status !== 0 && op === 'replace') throw new Error(`ip route ${op}: ${r.stderr}`)
}

/** Copies a closure to spi as root (over its LAN link), as an administrator would. */
function execNixCopyAsRoot(storePath: string): void {
  const t = testbed()
  const r = spawnSync('nix-copy-closure', ['--to', 'root@spi-direct', storePath], {
    env: { ...process.env, NIX_SSHOPTS: `-F ${t.TESTBED_SSH_CONFIG}` },
    encoding: 'utf8',
    timeout: 300_000
  })
  if (r.status !== 0) throw new Error(`nix-copy-closure: ${r.stderr}`)
}

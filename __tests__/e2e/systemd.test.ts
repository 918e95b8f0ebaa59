import * as fs from 'fs'
import {
  assertNothingLeftOnPi,
  deployInputs,
  describeE2E,
  fixturePath,
  killJumpSessions,
  onPi,
  piExec,
  piProcesses,
  piState,
  resetPi,
  runAction,
  testbed
} from './harness'

/**
 * The Pi that is a Pi (testbed/systemd-pi.sh): systemd 257 as PID 1 in a container, logind with
 * KillUserProcesses=yes, OpenSSH through PAM (every SSH connection is a logind session), Nix 2.26
 * with a nix-daemon, and a NixOS stage-2 stand-in that boots the boot entry's system.
 */
describeE2E('a target with systemd as PID 1, logind and a modern Nix', () => {
  const spi = (config: string, extra: Record<string, string> = {}): Record<string, string> =>
    deployInputs(config, { 'target-host': testbed().TESTBED_SPI, ...extra })
  const sleep = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms))
  /** The agent's processes on the systemd Pi, by host pid (ip netns pids), while it runs. */
  const agentPids = (): number[] =>
    piProcesses(['/run/nix-deploy-action/'], 'spi').map(l => Number(l.split(' ')[0]))
  /** The cgroup of a process as the kernel says (unified hierarchy line), from the host. */
  const cgroupOf = (pid: number): string =>
    fs
      .readFileSync(`/proc/${pid}/cgroup`, 'utf8')
      .split('\n')
      .find(l => l.startsWith('0::')) ?? ''

  beforeAll(() => {
    for (const c of ['pi-gen0', 'pi-gen1', 'pi-slow-activation', 'pi-activation-fails']) fixturePath(c)
  }, 300_000)
  beforeEach(() => resetPi('spi'), 120_000)
  afterEach(() => assertNothingLeftOnPi([], 'spi', 45_000), 60_000)

  it('is what it claims: systemd runs as PID 1, logind kills what a closed SSH session leaves, Nix 2.26 with its daemon', async () => {
    expect(piExec(['cat', '/proc/1/comm'], 'spi')).toBe('systemd')
    expect(piExec(['systemctl', 'is-active', 'systemd-logind', 'nix-daemon.socket', 'ssh'], 'spi')).toBe(
      'active\nactive\nactive'
    )
    expect(onPi('nix-store --version', 'spi')).toMatch(/^nix-store \(Nix\) 2\.2[6-9]/)
    // The control for the detached-activation test below: a process an SSH session started in a
    // new session of its own (setsid, nohup) is still the logind session's, and dies with it.
    onPi('setsid nohup sleep 4321 >/dev/null 2>&1 < /dev/null & echo started', 'spi')
    let left = piProcesses(['sleep 4321'], 'spi')
    for (let i = 0; i < 100 && left.length > 0; i++) {
      await sleep(200)
      left = piProcesses(['sleep 4321'], 'spi')
    }
    expect(left).toEqual([])
  }, 120_000)

  it('deploys through the jump host: the activation agent runs as a transient unit, outside the SSH session', async () => {
    const slow = fixturePath('pi-slow-activation')
    const pending = runAction(spi('pi-slow-activation'))
    let cgroups: string[] = []
    for (let i = 0; i < 300 && cgroups.length === 0; i++) {
      cgroups = agentPids().map(cgroupOf).filter(Boolean)
      if (cgroups.length === 0) await sleep(100)
    }
    const run = await pending
    expect(run.exitCode).toBe(0)
    expect(run.outputs.result).toBe('deployed')
    expect(cgroups.length).toBeGreaterThan(0)
    // systemd-run's unit in the target's system slice, not the SSH login session's scope.
    for (const cg of cgroups) {
      expect(cg).toMatch(/\/system\.slice\/nix-deploy-action-[^/]+\.service$/)
      expect(cg).not.toMatch(/session-[^/]*\.scope/)
    }
    expect(piState('spi')).toMatchObject({ current: slow, profile: slow, bootDefault: slow })
    // Copied into a store a nix-daemon serves: valid there too.
    expect(onPi(`NIX_REMOTE=daemon nix-store --verify-path ${slow} && echo valid`, 'spi')).toBe('valid')
  }, 300_000)

  it('the SSH connection cut mid-activation, logind ending the session: the activation completes, the action reconnects', async () => {
    const slow = fixturePath('pi-slow-activation')
    const pending = runAction(spi('pi-slow-activation'))
    for (let i = 0; i < 300 && agentPids().length === 0; i++) await sleep(100)
    expect(agentPids().length).toBeGreaterThan(0)
    expect(killJumpSessions()).toBeGreaterThan(0)
    const run = await pending
    expect(run.exitCode).toBe(0)
    expect(run.outputs.result).toBe('deployed')
    expect(piState('spi')).toMatchObject({ current: slow, profile: slow })
  }, 300_000)

  it('a failing activation is rolled back to exactly what ran before', async () => {
    const before = piState('spi')
    const run = await runAction(spi('pi-activation-fails'))
    expect(run.exitCode).not.toBe(0)
    expect(run.outputs.result).toBe('rolled-back')
    expect(piState('spi')).toEqual(before)
  }, 300_000)

  it('boot mode, then a reboot: the Pi comes back running the new boot entry (booted = current)', async () => {
    const gen1 = fixturePath('pi-gen1')
    const gen0 = fixturePath('pi-gen0')
    const run = await runAction(spi('pi-gen1', { mode: 'boot' }))
    expect(run.outputs.result).toBe('deployed')
    expect(piState('spi')).toMatchObject({ current: gen0, profile: gen1, bootDefault: gen1 })
    const bootId = piExec(['cat', '/proc/sys/kernel/random/boot_id'], 'spi')
    piExec(['systemctl', 'reboot'], 'spi')
    let now = bootId
    for (let i = 0; i < 120 && now === bootId; i++) {
      await sleep(500)
      try {
        now = piExec(['cat', '/proc/sys/kernel/random/boot_id'], 'spi')
      } catch {
        // between two boots
      }
    }
    expect(now).not.toBe(bootId)
    piExec(['sh', '-c', 'systemctl is-system-running --wait || true'], 'spi')
    expect(piExec(['readlink', '/run/booted-system', '/run/current-system'], 'spi')).toBe(`${gen1}\n${gen1}`)
    expect(onPi('readlink /run/current-system', 'spi')).toBe(gen1)
  }, 300_000)
})

import { execFileSync, spawn } from 'child_process'
import * as fs from 'fs'
import * as path from 'path'
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
  ROOT,
  runAction,
  testbed
} from './harness'

/** Inputs for a deploy of fixture `config` to the systemd Pi, through the jump host. */
const spi = (config: string, extra: Record<string, string> = {}): Record<string, string> =>
  deployInputs(config, { 'target-host': testbed().TESTBED_SPI, ...extra })
const sleep = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms))
const bootId = (): string => piExec(['cat', '/proc/sys/kernel/random/boot_id'], 'spi')

/**
 * Reboots the systemd Pi (systemctl reboot inside it; the testbed boots the container again) and
 * waits until it runs with a new boot id and has finished booting (60 s, then the test fails).
 */
async function rebootSpi(): Promise<void> {
  const before = bootId()
  piExec(['systemctl', 'reboot'], 'spi')
  let now = before
  for (let i = 0; i < 120 && now === before; i++) {
    await sleep(500)
    try {
      now = bootId()
    } catch {
      // between two boots
    }
  }
  expect(now).not.toBe(before)
  await untilBooted()
}

/** Until the systemd Pi's boot has finished (running or degraded: sshd up); 60 s, then the test fails. */
async function untilBooted(): Promise<void> {
  // Right after a boot id changed, systemctl may not reach the new boot's bus yet ("Failed to
  // connect to system scope bus"): ask again.
  let state = ''
  for (let i = 0; i < 120 && !['running', 'degraded'].includes(state); i++) {
    try {
      state = piExec(['sh', '-c', 'systemctl is-system-running --wait 2>/dev/null || true'], 'spi')
    } catch {
      state = '' // its container between two boots
    }
    if (!['running', 'degraded'].includes(state)) await sleep(500)
  }
  expect(['running', 'degraded']).toContain(state)
}

/**
 * The Pi that is a Pi (testbed/systemd-pi.sh): systemd 257 as PID 1 in a container, logind with
 * KillUserProcesses=yes, OpenSSH through PAM (every SSH connection is a logind session), Nix 2.26
 * with a nix-daemon, and a NixOS stage-2 stand-in that boots the boot entry's system.
 */
describeE2E('a target with systemd as PID 1, logind and a modern Nix', () => {
  /**
   * The agent's processes on the systemd Pi (`sh …/agent.sh --dir …`), by host pid (ip netns pids),
   * while it runs; not the SSH session's start script, whose arguments name the same directory.
   */
  const agentPids = (): number[] =>
    piProcesses(['/run/nix-deploy-action/'], 'spi')
      .filter(l => /^\d+ \S*sh \/run\/nix-deploy-action\/[0-9a-f]+\/agent\.sh /.test(l))
      .map(l => Number(l.split(' ')[0]))
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
    // Its cgroup tree is its own: every process in it descends from its systemd. (The systemd Pis
    // once shared one, and spi's systemd waited, for minutes, on spi2's user@0.service.)
    const init = Number(
      execFileSync('bash', [path.join(ROOT, 'testbed', 'systemd-pi.sh'), 'init-pid'], {
        env: { ...process.env, PI: 'spi' },
        encoding: 'utf8'
      })
    )
    const tree = cgroupOf(init)
      .slice('0::'.length)
      .replace(/\/init\.scope$/, '')
    expect(tree).not.toBe('')
    const parentOf = (pid: number): number =>
      Number(
        fs
          .readFileSync(`/proc/${pid}/stat`, 'utf8')
          .replace(/^.*\) /s, '')
          .split(' ')[1]
      )
    const descendsFromInit = (pid: number): boolean => {
      for (let p = pid; p > 1; p = parentOf(p)) if (p === init) return true
      return false
    }
    const foreign: number[] = []
    let inTree = 0
    for (const name of fs.readdirSync('/proc').filter(n => /^\d+$/.test(n))) {
      try {
        if (!cgroupOf(Number(name)).startsWith(`0::${tree}/`)) continue
        inTree++
        if (!descendsFromInit(Number(name))) foreign.push(Number(name))
      } catch {
        // ended meanwhile
      }
    }
    expect(inTree).toBeGreaterThan(3)
    expect(foreign).toEqual([])
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
    await rebootSpi()
    expect(piExec(['readlink', '/run/booted-system', '/run/current-system'], 'spi')).toBe(`${gen1}\n${gen1}`)
    expect(onPi('readlink /run/current-system', 'spi')).toBe(gen1)
  }, 300_000)
})

describeE2E('needs-reboot: the new system against what the target booted', () => {
  beforeAll(() => {
    for (const c of ['pi-gen0', 'pi-gen1', 'pi-gen1-new-kernel']) fixturePath(c)
  }, 300_000)
  beforeEach(() => resetPi('spi'), 120_000)

  it('dry-activate of a new kernel says it needs a reboot; the same kernel does not', async () => {
    const before = piState('spi')
    const kernel = await runAction(spi('pi-gen1-new-kernel', { mode: 'dry-activate' }))
    expect(kernel.exitCode).toBe(0)
    expect(kernel.outputs['needs-reboot']).toBe('true')
    const [only] = Object.values(JSON.parse(kernel.outputs.results) as Record<string, Record<string, string>>)
    expect(only['needs-reboot']).toBe('true')
    expect(kernel.summary).toMatch(/\| Reboot \| this change needs a reboot: /)
    expect(kernel.summary).toContain('| ↕ | linux | 6.6.51 | 6.6.63 |')
    const same = await runAction(spi('pi-gen1', { mode: 'dry-activate' }))
    expect(same.outputs['needs-reboot']).toBe('false')
    expect(same.summary).toContain('| Reboot | not needed |')
    expect(piState('spi')).toEqual(before)
  }, 300_000)

  it('a build says so against diff-against, and nothing without it', async () => {
    const build = { mode: 'build', 'target-host': '', 'jump-host': '' }
    const against = await runAction(
      spi('pi-gen1-new-kernel', { ...build, 'diff-against': `${testbed().TESTBED_FIXTURE}#pi-gen0` })
    )
    expect(against.outputs).toMatchObject({ result: 'built', 'needs-reboot': 'true' })
    expect(against.summary).toMatch(/\| Reboot \| this change needs a reboot: .* the diff-against system/)
    const alone = await runAction(spi('pi-gen1-new-kernel', build))
    expect(alone.outputs).toMatchObject({ result: 'built', 'needs-reboot': '' })
    expect(alone.summary).not.toContain('| Reboot |')
  }, 300_000)

  it('after a switch to a new kernel it still needs one, until the target booted it', async () => {
    const run = await runAction(spi('pi-gen1-new-kernel'))
    expect(run.outputs).toMatchObject({ result: 'deployed', 'needs-reboot': 'true' })
    await rebootSpi()
    const again = await runAction(spi('pi-gen1-new-kernel'))
    expect(again.outputs).toMatchObject({ result: 'unchanged', 'needs-reboot': 'false' })
  }, 300_000)
})

describeE2E("a Pi's small /boot: refused before copying, and never left without a bootable entry", () => {
  /** The systemd Pi's /boot as this machine sees it (a 64 MiB tmpfs, bound into the container). */
  const bootDir = (): string => path.join(testbed().TESTBED, 'spi', 'boot')
  const extlinuxDefault = (): { kernel: string; initrd: string } => {
    const conf = fs.readFileSync(path.join(bootDir(), 'extlinux', 'extlinux.conf'), 'utf8')
    const entry = conf.split('LABEL ').find(e => e.startsWith('nixos-default'))!
    return {
      kernel: /LINUX \.\.\/nixos\/(\S+)/.exec(entry)![1],
      initrd: /INITRD \.\.\/nixos\/(\S+)/.exec(entry)![1]
    }
  }

  beforeAll(() => {
    for (const c of ['pi-gen0', 'pi-gen1', 'pi-gen1-new-kernel', 'pi-fills-boot']) fixturePath(c)
  }, 300_000)
  beforeEach(() => resetPi('spi'), 120_000)

  it('a kernel and initrd that do not fit on /boot are refused before anything is copied', async () => {
    const before = piState('spi')
    // The installed system's kernel and initrd are in /boot, named after their store paths.
    const installed = extlinuxDefault()
    expect(fs.existsSync(path.join(bootDir(), 'nixos', installed.kernel))).toBe(true)
    const free = Number(
      execFileSync('df', ['-Pk', bootDir()], { encoding: 'utf8' }).split('\n')[1].split(/\s+/)[3]
    )
    // Leave 600 KiB: less than the new kernel (256 KiB) and initrd (128 KiB) plus the 1 MiB margin.
    execFileSync('fallocate', ['-l', `${(free - 600) * 1024}`, path.join(bootDir(), 'filler')])
    const run = await runAction(spi('pi-gen1-new-kernel'))
    expect(run.exitCode).not.toBe(0)
    expect(run.outputs.result).toBe('failed')
    expect(run.log).toMatch(
      /::error title=.*has [0-9.]+ KiB free on \/boot but the new generation's kernel and initrd need about 1.4 MiB \(384.0 KiB plus margin\)/
    )
    expect(run.log).toMatch(/configurationLimit/)
    expect(run.log).not.toContain('Copying')
    expect(onPi(`test -e ${fixturePath('pi-gen1-new-kernel')} && echo present || echo absent`, 'spi')).toBe(
      'absent'
    )
    expect(piState('spi')).toEqual(before)
    // The same kernel as the installed one adds nothing to /boot: that deploy goes ahead.
    const sameKernel = await runAction(spi('pi-gen1'))
    expect(sameKernel.outputs.result).toBe('deployed')
  }, 300_000)

  it('a boot loader install that hits ENOSPC rolls back and leaves the previous entry bootable', async () => {
    const before = piState('spi')
    const entry = extlinuxDefault()
    const run = await runAction(spi('pi-fills-boot'))
    expect(run.exitCode).not.toBe(0)
    expect(run.outputs.result).toBe('rolled-back')
    expect(run.summary).toContain('installing the boot loader failed')
    expect(piState('spi')).toEqual(before)
    // The default entry is the one before, and the files it names are whole; no temporary is left.
    expect(extlinuxDefault()).toEqual(entry)
    for (const f of [entry.kernel, entry.initrd])
      expect(fs.readFileSync(path.join(bootDir(), 'nixos', f))).toEqual(
        fs.readFileSync(
          execFileSync(
            'readlink',
            ['-f', `${before.current}/${f.endsWith('-initrd') ? 'initrd' : 'kernel'}`],
            {
              encoding: 'utf8'
            }
          ).trim()
        )
      )
    expect(fs.readdirSync(path.join(bootDir(), 'nixos')).filter(f => f.endsWith('.tmp'))).toEqual([])
    expect(fs.readdirSync(path.join(bootDir(), 'nixos')).some(f => f.includes('6.6.70'))).toBe(false)
  }, 300_000)
})

describeE2E("switch-to-configuration's units on a systemd target", () => {
  const unitState = (unit: string): string =>
    piExec(['sh', '-c', `systemctl is-active ${unit} || true`], 'spi')

  beforeAll(() => {
    for (const c of ['pi-gen0', 'pi-gen1', 'pi-unit-fails']) fixturePath(c)
  }, 300_000)
  beforeEach(() => resetPi('spi'), 120_000)

  it("switch starts the new system's service and stops the old one's; a health check on that unit passes", async () => {
    expect(unitState('fixture-gen0.service')).toBe('active')
    const run = await runAction(
      spi('pi-gen1', { 'health-checks': 'systemctl is-active --quiet fixture-gen1.service' })
    )
    expect(run.exitCode).toBe(0)
    expect(run.outputs.result).toBe('deployed')
    expect(run.summary).toMatch(/Health checks \| health checks passed on attempt 1/)
    expect(unitState('fixture-gen1.service')).toBe('active')
    expect(unitState('fixture-gen0.service')).toBe('inactive')
  }, 300_000)

  it('a unit that fails to start fails the switch (exit 4, as on NixOS); the rollback starts the old service again', async () => {
    const before = piState('spi')
    const run = await runAction(spi('pi-unit-fails'))
    expect(run.exitCode).not.toBe(0)
    expect(run.outputs.result).toBe('rolled-back')
    expect(run.summary).toContain('the following units failed: fixture-unit-fails.service')
    expect(piState('spi')).toEqual(before)
    expect(unitState('fixture-gen0.service')).toBe('active')
    expect(unitState('fixture-unit-fails.service')).not.toBe('active')
  }, 300_000)
})

describeE2E('reboot: auto and always', () => {
  beforeAll(() => {
    for (const c of ['pi-gen0', 'pi-gen1', 'pi-gen1-new-kernel']) fixturePath(c)
  }, 300_000)
  beforeEach(() => resetPi('spi'), 120_000)
  afterEach(() => {
    piExec(['sh', '-c', 'rm -f /etc/ssh/sshd_not_to_be_run; systemctl start ssh || true'], 'spi')
  })

  it('a new kernel with reboot: auto: boot entry, reboot, back with another boot id, booted = current = new, checks pass', async () => {
    const top = fixturePath('pi-gen1-new-kernel')
    const id = bootId()
    const run = await runAction(
      spi('pi-gen1-new-kernel', {
        reboot: 'auto',
        'health-checks': 'test "$(readlink -f /run/booted-system)" = "$(readlink -f /run/current-system)"'
      })
    )
    expect(run.exitCode).toBe(0)
    expect(run.outputs).toMatchObject({ result: 'deployed', 'needs-reboot': 'true', changed: 'true' })
    expect(bootId()).not.toBe(id)
    expect(piExec(['readlink', '/run/booted-system', '/run/current-system'], 'spi')).toBe(`${top}\n${top}`)
    expect(piState('spi')).toMatchObject({ current: top, profile: top, bootDefault: top })
    expect(run.summary).toMatch(/\| Reboot \| rebooted into the new system in [0-9.]+ s \|/)
    expect(run.summary).toMatch(/Health checks \| health checks passed on attempt 1/)
    expect(run.log).toMatch(/::warning::rebooting target root@10\.99\.5\.2 into the new system/)
    // The lock was renewed after the boot and released at the end.
    expect(onPi('test -e /nix/var/nix-deploy-action/lock/owner && echo held || echo free', 'spi')).toBe(
      'free'
    )
  }, 300_000)

  it('reboot: auto without a kernel change does not reboot; always does', async () => {
    const id = bootId()
    const same = await runAction(spi('pi-gen1', { reboot: 'auto' }))
    expect(same.outputs).toMatchObject({ result: 'deployed', 'needs-reboot': 'false' })
    expect(bootId()).toBe(id)
    expect(same.summary).toContain('| Reboot | not needed |')
    const always = await runAction(spi('pi-gen0', { reboot: 'always' }))
    expect(always.outputs.result).toBe('deployed')
    expect(bootId()).not.toBe(id)
  }, 300_000)

  it('a target that already runs the new system but booted an older kernel: reboot: auto boots it (unchanged)', async () => {
    const top = fixturePath('pi-gen1-new-kernel')
    const first = await runAction(spi('pi-gen1-new-kernel'))
    expect(first.outputs).toMatchObject({ result: 'deployed', 'needs-reboot': 'true' })
    const id = bootId()
    const run = await runAction(spi('pi-gen1-new-kernel', { reboot: 'auto' }))
    expect(run.exitCode).toBe(0)
    expect(run.outputs).toMatchObject({ result: 'unchanged', 'needs-reboot': 'true', 'copied-bytes': '0' })
    expect(bootId()).not.toBe(id)
    expect(piExec(['readlink', '/run/booted-system', '/run/current-system'], 'spi')).toBe(`${top}\n${top}`)
    expect(run.summary).toMatch(/\| Reboot \| rebooted into the new system in [0-9.]+ s \|/)
    expect(onPi('test -e /nix/var/nix-deploy-action/lock/owner && echo held || echo free', 'spi')).toBe(
      'free'
    )
  }, 300_000)

  it('a target that does not answer after its reboot: fails at reboot-timeout, naming it', async () => {
    // sshd will not start at the next boot (Debian's ssh.service condition); the running one stays.
    piExec(['touch', '/etc/ssh/sshd_not_to_be_run'], 'spi')
    const run = await runAction(spi('pi-gen1-new-kernel', { reboot: 'auto', 'reboot-timeout': '20' }))
    expect(run.exitCode).not.toBe(0)
    expect(run.outputs.result).toBe('failed')
    expect(run.log).toMatch(
      /::error title=.*did not come back from its reboot within reboot-timeout \(20 s\)/
    )
    // It did reboot, into the new system (its boot entry): what the error says to look at.
    expect(piExec(['readlink', '/run/booted-system'], 'spi')).toBe(fixturePath('pi-gen1-new-kernel'))
  }, 300_000)
})

/**
 * The boot trial (nixos/boot-trial.nix, the same script in the fixtures pi-gen1-trial and
 * pi-no-ssh): a reboot into a system that has it is confirmed by the deploy after the boot, or the
 * target goes back to its previous system by itself.
 */
describeE2E(
  'the boot trial on the systemd Pi: a new system that boots but cannot be reached goes back',
  () => {
    const trialFile = (name: string): string =>
      onPi(`test -e /nix/var/nix-deploy-action/${name} && echo yes || echo no`, 'spi')
    const sshActive = (): string => onPi('systemctl is-active ssh.service || true', 'spi')
    let gen0: string
    beforeAll(() => {
      gen0 = fixturePath('pi-gen0')
      for (const c of ['pi-gen1-trial', 'pi-no-ssh', 'pi-gen1']) fixturePath(c)
    }, 300_000)
    beforeEach(() => resetPi('spi'), 120_000)

    it('a new kernel on trial: rebooted, checked, confirmed; the trial ended confirmed, nothing undone', async () => {
      const top = fixturePath('pi-gen1-trial')
      const id = bootId()
      const run = await runAction(
        spi('pi-gen1-trial', {
          reboot: 'auto',
          'health-checks': 'systemctl is-active fixture-gen1-trial.service'
        })
      )
      if (run.exitCode !== 0) console.log(run.log.slice(-5000))
      expect(run.exitCode).toBe(0)
      expect(run.outputs).toMatchObject({ result: 'deployed', 'needs-reboot': 'true' })
      expect(bootId()).not.toBe(id)
      expect(run.summary).toMatch(
        /\| Reboot \| rebooted into the new system in [0-9.]+ s, checked and confirmed [0-9.]+ s later \(boot trial confirmed\) \|/
      )
      expect(run.log).not.toMatch(/::warning::rebooting/)
      // The trial on the target: confirmed (the record renamed by the deploy), its unit ended.
      expect([
        trialFile('boot-trial'),
        trialFile('boot-trial.confirmed'),
        trialFile('boot-trial.expired')
      ]).toEqual(['no', 'yes', 'no'])
      // It sees the confirmation at its next look (once a second): until then it may still run.
      const ended = (): boolean =>
        onPi('systemctl show -p ActiveState --value nix-deploy-boot-trial.service', 'spi') === 'inactive'
      for (let i = 0; i < 40 && !ended(); i++) await sleep(500)
      expect(
        onPi('systemctl show -p ActiveState -p Result nix-deploy-boot-trial.service | sort', 'spi')
      ).toBe('ActiveState=inactive\nResult=success')
      expect(piExec(['readlink', '/run/booted-system', '/run/current-system'], 'spi')).toBe(`${top}\n${top}`)
      expect(piState('spi')).toMatchObject({ current: top, profile: top, bootDefault: top })
    }, 300_000)

    it("the demo's reboot with the machine under load (two busy loops on two cores): the trial waits for the login, confirmed", async () => {
      const top = fixturePath('pi-gen1-trial')
      // Busy loops of this test's own (ended by their pids), as a loaded runner has.
      const loops = [0, 1].map(() => spawn('sh', ['-c', 'while :; do :; done'], { stdio: 'ignore' }))
      try {
        const run = await runAction(spi('pi-gen1-trial', { reboot: 'auto' }), { timeoutMs: 600_000 })
        if (run.exitCode !== 0) console.log(run.log.slice(-5000))
        expect(run.exitCode).toBe(0)
        expect(run.outputs).toMatchObject({ result: 'deployed', 'needs-reboot': 'true' })
        expect(run.summary).toMatch(/\(boot trial confirmed\)/)
        expect(piState('spi')).toMatchObject({ current: top, profile: top, bootDefault: top })
      } finally {
        for (const l of loops) l.kill('SIGKILL')
      }
    }, 700_000)

    it('a new system that boots with sshd broken: unconfirmed, the Pi boots its previous system again (rolled-back)', async () => {
      const before = piState('spi')
      const run = await runAction(spi('pi-no-ssh', { reboot: 'auto', 'reboot-timeout': '30' }))
      expect(run.exitCode).not.toBe(0)
      expect(run.outputs.result).toBe('rolled-back')
      expect(run.log).toMatch(
        /::error title=.*booted the new system, but the deploy could not reach it within its boot trial's window \(30 s of its boot\)/
      )
      expect(run.summary).toContain('not confirmed, the target went back to its previous system')
      // It did boot the new system (the trial expired there), then the previous one, with sshd.
      expect([
        trialFile('boot-trial'),
        trialFile('boot-trial.expired'),
        trialFile('boot-trial.rolled-back')
      ]).toEqual(['no', 'yes', 'yes'])
      expect(piExec(['readlink', '/run/booted-system', '/run/current-system'], 'spi')).toBe(
        `${gen0}\n${gen0}`
      )
      const after = piState('spi')
      expect(after).toMatchObject({
        current: gen0,
        profile: gen0,
        bootDefault: gen0,
        profileLink: before.profileLink
      })
      expect(sshActive()).toBe('active')
      expect(onPi('test -e /nix/var/nix-deploy-action/lock/owner && echo held || echo free', 'spi')).toBe(
        'free'
      )
    }, 300_000)

    it('its run lost during the checks after the boot, then the Pi reboots (a power cut, a crash): the next boot of the new system goes back by itself', async () => {
      const top = fixturePath('pi-gen1-trial')
      // The run checked in and runs a check that fails and is retried; the runner is lost there
      // (SIGKILL: nothing of it runs after), as a cancelled job or a dead self-hosted runner.
      const first = await runAction(
        spi('pi-gen1-trial', {
          reboot: 'auto',
          'health-checks': 'test -e /run/never-there',
          'health-timeout': '900'
        }),
        {
          timeoutMs: 600_000,
          onOutput: (log, child) => {
            if (/health check failed \(attempt 1, /.test(log)) child.kill('SIGKILL')
          }
        }
      )
      if (first.exitCode !== null) console.log(first.log.slice(-5000))
      expect(first.exitCode).toBeNull()
      expect(piExec(['readlink', '/run/booted-system'], 'spi')).toBe(top)
      expect(trialFile('boot-trial.reached')).toBe('yes')
      // Its trial waits over 900 s for a verdict; the Pi reboots before that.
      piExec(['systemctl', 'reboot'], 'spi')
      const runs = (): string => {
        try {
          return piExec(['readlink', '/run/booted-system', '/run/current-system'], 'spi')
        } catch {
          return '' // between two boots
        }
      }
      // Two boots (the new system's, whose trial goes back at once, then the previous one's):
      // well within 300 s; a Pi still on the new system then fails the test.
      const deadline = Date.now() + 300_000
      while (runs() !== `${gen0}\n${gen0}` && Date.now() < deadline) await sleep(2000)
      expect(runs()).toBe(`${gen0}\n${gen0}`)
      await untilBooted()
      expect(piState('spi')).toMatchObject({ current: gen0, profile: gen0, bootDefault: gen0 })
      expect(onPi('cat /nix/var/nix-deploy-action/boot-trial.rolled-back', 'spi')).toMatch(/a reboot cut it/)
      expect([
        trialFile('boot-trial'),
        trialFile('boot-trial.reached'),
        trialFile('boot-trial.expired')
      ]).toEqual(['no', 'no', 'yes'])
      // The lock it held through the trial is free again (a v3 lease of another boot, no trial).
      const next = await runAction(spi('pi-gen1'))
      if (next.exitCode !== 0) console.log(next.log.slice(-5000))
      expect(next.exitCode).toBe(0)
      expect(piState('spi')).toMatchObject({ current: fixturePath('pi-gen1') })
    }, 900_000)

    it('a health check that fails after the boot rejects the trial: the Pi goes back at once', async () => {
      const run = await runAction(
        spi('pi-gen1-trial', {
          reboot: 'auto',
          'health-checks': 'test -e /run/no-such-file',
          'health-timeout': '5',
          'confirm-timeout': '300'
        })
      )
      // (Once, in a loaded CI run, this run was still going at runAction's 240 s: its log, if so again.)
      if (run.outputs.result !== 'rolled-back')
        console.log(
          `exit ${run.exitCode} after ${run.ms} ms\n${run.log.slice(-8000)}\n${piExec(['sh', '-c', 'journalctl -b -1 -u nix-deploy-boot-trial --no-pager 2>&1 | tail -40; journalctl -b -u nix-deploy-boot-trial --no-pager 2>&1 | tail -20; ls -la /nix/var/nix-deploy-action'], 'spi')}`
        )
      expect(run.exitCode).not.toBe(0)
      expect(run.outputs.result).toBe('rolled-back')
      expect(run.log).toMatch(
        /a health check failed after the reboot into the new system .*, so the deploy rejected its boot trial/
      )
      // Rejected, not expired by its 300 s: the run ended long before that.
      expect(run.ms).toBeLessThan(240_000)
      expect(piExec(['readlink', '/run/booted-system', '/run/current-system'], 'spi')).toBe(
        `${gen0}\n${gen0}`
      )
      expect(piState('spi')).toMatchObject({ current: gen0, profile: gen0, bootDefault: gen0 })
    }, 300_000)

    it('a NixOps network importing nixos/boot-trial.nix, with a key: rebooted on trial, confirmed; the key in /run/keys again after the boot', async () => {
      const fixture = (...p: string[]): string => path.join(testbed().TESTBED, 'fixture', ...p)
      const { flake: _flake, ...inputs } = spi('unused')
      const id = bootId()
      const run = await runAction({
        ...inputs,
        'target-host': '',
        network: fixture('network', 'spi.nix'),
        nixpkgs: fixture('nixpkgs'),
        reboot: 'auto'
      })
      if (run.exitCode !== 0) console.log(run.log.slice(-6000))
      expect(run.exitCode).toBe(0)
      expect(run.outputs).toMatchObject({ result: 'deployed', 'needs-reboot': 'true' })
      expect(bootId()).not.toBe(id)
      // The module's unit (rendered from systemd.services by the nixpkgs stand-in) ran the trial.
      const top = run.outputs['store-path']
      expect(onPi(`cat ${top}/etc/systemd/system/nix-deploy-boot-trial.service`, 'spi')).toMatch(
        /^ExecStart=.*boot-trial\.sh$/m
      )
      expect(run.summary).toContain('(boot trial confirmed)')
      expect([trialFile('boot-trial'), trialFile('boot-trial.confirmed')]).toEqual(['no', 'yes'])
      expect(piExec(['readlink', '/run/booted-system'], 'spi')).toBe(top)
      // deployment.keys live in /run/keys, which the boot emptied: uploaded again after it.
      expect(onPi('stat -c "%U:%G %a" /run/keys/wifi-psk; cat /run/keys/wifi-psk', 'spi')).toBe(
        'root:root 640\nspi-wifi-secret-5521'
      )
      // As NixOps' and colmena's: a unit per key and keys.target. The service that requires the key
      // waited through the boot until the upload, then read it (it fails when the key is missing).
      expect(onPi(`cat ${top}/etc/systemd/system/wifi-psk-key.service`, 'spi')).toMatch(
        /^Before=keys\.target$/m
      )
      // Their start jobs may still be queued (the key unit looks once a second): waited for, 30 s at most.
      const settled = onPi(
        'u="wifi-psk-key.service keys.target wifi.service"; for i in $(seq 60); do [ -n "$(systemctl list-jobs --no-legend $u)" ] || break; sleep 0.5; done; systemctl is-active $u || true',
        'spi'
      )
      expect(settled).toBe('active\nactive\nactive')
      expect(onPi('cat /run/nda-wifi-psk-read', 'spi')).toBe(String('spi-wifi-secret-5521'.length))
    }, 300_000)

    it('switch (no reboot) to a system whose unit stops sshd: magic rollback, the old units and sshd back', async () => {
      const before = piState('spi')
      const run = await runAction(spi('pi-no-ssh', { 'confirm-timeout': '15' }))
      expect(run.exitCode).not.toBe(0)
      expect(run.outputs.result).toBe('rolled-back')
      expect(piState('spi')).toEqual(before)
      // The rollback's switch stopped the new system's unit (which masked sshd) and started the old one's.
      expect(sshActive()).toBe('active')
      expect(onPi('systemctl is-active fixture-gen0.service fixture-ssh-off.service || true', 'spi')).toBe(
        'active\ninactive'
      )
    }, 300_000)

    it('a power cut while a switch waits for its confirmation: the Pi boots its previous system, which the run then puts back in order', async () => {
      const before = piState('spi')
      const top = fixturePath('pi-no-ssh')
      // A long confirm-timeout: the agent's own timeout (in /run, lost with the power) is not what brings it back.
      const running = runAction(spi('pi-no-ssh', { 'confirm-timeout': '600' }), { timeoutMs: 800_000 })
      const current = (): string => {
        try {
          return piExec(['readlink', '-f', '/run/current-system'], 'spi')
        } catch {
          return ''
        }
      }
      const deadline = Date.now() + 300_000
      while (current() !== top && Date.now() < deadline) await sleep(500)
      expect(current()).toBe(top)
      // In the window: the new system runs (and lets nobody in), the profile and the boot entry are still the old system's.
      // (Read from inside the container: SSH is what the new system broke.)
      const inWindow = piExec(
        [
          'sh',
          '-c',
          'readlink -f /nix/var/nix/profiles/system; cat /nix/var/nix-fixture/boot-default; ls /nix/var/nix/profiles | grep "^system-" | sort | tr "\\n" " "'
        ],
        'spi'
      ).split('\n')
      expect(inWindow).toEqual([gen0, gen0, before.generations.join(' ')])
      // The power goes, and comes back: a Pi booting the new system would stay without SSH (the
      // testbed's start then fails waiting for sshd).
      try {
        execFileSync('bash', [path.join(ROOT, 'testbed', 'systemd-pi.sh'), 'power-cut'], {
          env: { ...process.env, PI: 'spi' },
          stdio: 'ignore',
          timeout: 180_000
        })
      } catch {
        // judged by what it booted, below
      }
      expect(piExec(['readlink', '/run/booted-system', '/run/current-system'], 'spi')).toBe(
        `${gen0}\n${gen0}`
      )
      await untilBooted()
      // The run, its confirmation refused until the Pi was back, finds its agent gone with /run and
      // puts the target back as it was: it fails as rolled back, nothing of the new system left.
      const run = await running
      if (run.exitCode !== 1) console.log(run.log.slice(-5000))
      expect(run.exitCode).toBe(1)
      expect(run.outputs.result).toBe('rolled-back')
      expect(piState('spi')).toEqual(before)
      expect(sshActive()).toBe('active')
    }, 900_000)
  }
)

/**
 * A fleet of systemd Pis (spi and spi2, testbed/fixture/network/spi-fleet.nix): the canary and rollback-fleet
 * rollouts where a switch really stops and starts units. That a machine's old service was started
 * again (its ActiveEnterTimestampMonotonic moved) tells a machine deployed and put back from one
 * nothing touched; its state (running system, profile, boot entry, generations) says it is back.
 */
describeE2E('a fleet of systemd Pis: canary and rollback-fleet', () => {
  const fleetInputs = (extra: Record<string, string>): Record<string, string> => {
    const { flake: _flake, ...rest } = spi('unused')
    return {
      ...rest,
      'target-host': '',
      network: path.join(testbed().TESTBED, 'fixture', 'network', 'spi-fleet.nix'),
      nixpkgs: path.join(testbed().TESTBED, 'fixture', 'nixpkgs'),
      machines: '@systemd',
      ...extra
    }
  }
  const FLEET = ['spi', 'spi2'] as const
  type SystemdPi = (typeof FLEET)[number]
  /** What a machine runs and which of the two services are active, with when gen0's last started. */
  const unitFacts = (pi: SystemdPi): { gen0: string; fleet: string; gen0Started: number } => {
    const [gen0, fleet, started] = onPi(
      'systemctl is-active fixture-gen0.service || true; systemctl is-active fixture-spi-fleet.service || true; ' +
        'systemctl show -P ActiveEnterTimestampMonotonic fixture-gen0.service',
      pi
    ).split('\n')
    return { gen0, fleet, gen0Started: Number(started) }
  }
  type Results = Record<string, { result: string; 'store-path': string }>
  /** Deploys the fleet with a health check that fails on `pi` only; the step fails. */
  async function runFailingOn(
    pi: SystemdPi,
    extra: Record<string, string>
  ): Promise<{ run: Awaited<ReturnType<typeof runAction>>; results: Results }> {
    const run = await runAction(
      fleetInputs({
        'health-checks': `test "$(cat /etc/hostname)" != ${pi}`,
        'health-timeout': '5',
        ...extra
      })
    )
    expect(run.exitCode).toBe(1)
    return { run, results: JSON.parse(run.outputs.results) as Results }
  }

  beforeEach(() => {
    for (const pi of FLEET) resetPi(pi)
  }, 120_000)

  it('canary: the first Pi fails its health check and is rolled back, its old service running again; the second is not touched', async () => {
    const before = { spi: piState('spi'), spi2: piState('spi2') }
    const units = { spi: unitFacts('spi'), spi2: unitFacts('spi2') }
    expect(units.spi).toMatchObject({ gen0: 'active', fleet: 'inactive' })
    // Fails on spi (the first machine: the canary) only.
    const { run, results } = await runFailingOn('spi', { rollout: 'canary' })
    expect(results.spi.result).toBe('rolled-back')
    expect(results.spi2.result).toBe('skipped')
    expect(run.summary).toContain('not deployed: the canary failed (spi; rollout: canary)')
    // spi ran the new system (its switch stopped fixture-gen0.service) and is back.
    expect(piState('spi')).toEqual(before.spi)
    const spiAfter = unitFacts('spi')
    expect(spiAfter).toMatchObject({ gen0: 'active', fleet: 'inactive' })
    expect(spiAfter.gen0Started).toBeGreaterThan(units.spi.gen0Started)
    // spi2: as it was, down to its service's start; the new system never reached its store.
    expect(piState('spi2')).toEqual(before.spi2)
    expect(unitFacts('spi2')).toEqual(units.spi2)
    const newSystem = results.spi['store-path']
    expect(newSystem).toMatch(/^\/nix\/store\/[a-z0-9]{32}-nixos-system-[a-z0-9-]*spi-fleet$/)
    expect(onPi(`test -e ${newSystem} && echo present || echo absent`, 'spi2')).toBe('absent')
  }, 300_000)

  it('rollback-fleet, one at a time: the second Pi fails its health check, so the first, deployed and healthy, is put back too', async () => {
    const before = { spi: piState('spi'), spi2: piState('spi2') }
    const units = { spi: unitFacts('spi'), spi2: unitFacts('spi2') }
    // Fails on spi2 (the second batch) only.
    const { run, results } = await runFailingOn('spi2', {
      rollout: '1',
      'rollback-fleet': 'true',
      // Pruning waits for the fleet: the previous generation must still be there to go back to.
      'keep-generations': '1'
    })
    expect(results.spi.result).toBe('rolled-back')
    expect(results.spi2.result).toBe('rolled-back')
    expect(run.summary).toContain(
      `**spi rolled back (rollback-fleet):** back on <code>${before.spi.current}</code>: another machine of the fleet failed (spi2)`
    )
    // Each ran the new system, and runs, boots and lists exactly what it did before.
    for (const pi of FLEET) {
      expect(piState(pi)).toEqual(before[pi])
      const after = unitFacts(pi)
      expect(after).toMatchObject({ gen0: 'active', fleet: 'inactive' })
      expect(after.gen0Started).toBeGreaterThan(units[pi].gen0Started)
    }
  }, 300_000)
})

import { execFileSync } from 'child_process'
import * as fs from 'fs'
import * as path from 'path'
import {
  deployInputs,
  describeE2E,
  fixturePath,
  onPi,
  piState,
  resetPi,
  ROOT,
  runAction,
  testbed
} from './harness'

/**
 * The booting Pi (testbed/booting-pi.sh): a QEMU aarch64 machine that boots as a Raspberry Pi 3
 * with a stock NixOS image does (U-Boot, extlinux.conf, a real kernel and initrd, systemd), in
 * tens of seconds. Its reboots are real: what a boot trial must survive is what a Pi does.
 */
const bpi = (config: string, extra: Record<string, string> = {}): Record<string, string> =>
  deployInputs(config, {
    'target-host': testbed().TESTBED_BPI,
    'jump-host': testbed().TESTBED_JUMP_BPI,
    ...extra
  })
const bootId = (): string => onPi('cat /proc/sys/kernel/random/boot_id', 'bpi')
/** The system the boot loader boots by default: the init= of extlinux.conf's default entry. */
const bootEntry = (): string =>
  onPi(
    "sed -n '/^LABEL nixos-default$/,/^LABEL/s|.*APPEND init=\\([^ ]*\\)/init.*|\\1|p' /boot/extlinux/extlinux.conf",
    'bpi'
  )
const booted = (): string => onPi('readlink -f /run/booted-system', 'bpi')
/** How many times the machine started U-Boot since it was powered on (its console). */
const boots = (): number =>
  Number(execFileSync('bash', [path.join(ROOT, 'testbed', 'booting-pi.sh'), 'boots'], { encoding: 'utf8' }))
const trialFiles = (): string =>
  onPi('cd /nix/var/nix-deploy-action && ls boot-trial* 2>/dev/null | sort | tr "\\n" " "', 'bpi')
/** Until the boot trial's unit has ended in this boot (it looks for the deploy's verdict once a second). */
async function trialUnitEnded(): Promise<void> {
  const state = (): string =>
    onPi('systemctl show -p ActiveState --value nix-deploy-boot-trial.service', 'bpi')
  for (let i = 0; i < 60 && state() !== 'inactive'; i++) await new Promise(r => setTimeout(r, 500))
  expect(state()).toBe('inactive')
}
/** `top` booted, running, the profile and the boot loader's default; its trial ended confirmed; the lock free. */
async function expectConfirmed(top: string): Promise<void> {
  expect(booted()).toBe(top)
  expect(piState('bpi')).toMatchObject({ current: top, profile: top })
  expect(bootEntry()).toBe(top)
  await trialUnitEnded()
  // (checked-in: the boot its checks ran in, for a confirmation sent again until the next trial.)
  expect(trialFiles()).toBe('boot-trial.checked-in boot-trial.confirmed')
  expect(lockState()).toBe('free')
}
const lockState = (): string =>
  onPi('test -e /nix/var/nix-deploy-action/lock/owner && echo held || echo free', 'bpi')
/** The boot loader's one-shot file (the testbed writes /etc/nix-deploy-action/boot-once so). */
const ONCE_FILE = '/boot/firmware/nix-deploy-once'
const onceFileBytes = (): number => Number(onPi(`wc -c <${ONCE_FILE}`, 'bpi'))
/** How many times a kernel panicked on the machine's console since its last power-on. */
const kernelPanics = (): number =>
  (
    fs
      .readFileSync(path.join(testbed().TESTBED, 'bpi', 'console.log'), 'latin1')
      .match(/Kernel panic - not syncing/g) ?? []
  ).length
/** The fields of the boot trial's record, kept under the name of how it ended (boot-trial.NAME). */
const trialRecord = (name: string): Record<string, string> =>
  Object.fromEntries(
    onPi(`cat /nix/var/nix-deploy-action/boot-trial.${name}`, 'bpi')
      .split('\n')
      .filter(line => line.includes('='))
      .map(line => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)])
  )

describeE2E(
  'a Pi that really reboots: the boot trial through real boots (testbed/booting-pi.sh)',
  () => {
    beforeAll(() => resetPi('bpi'), 900_000)
    afterAll(() => {
      execFileSync('bash', [path.join(ROOT, 'testbed', 'booting-pi.sh'), 'stop'])
    }, 60_000)

    // First, while the previous system is generation 0: the boot back must reach sshd within this
    // test's short reboot-timeout (120 s: the boot to sshd takes 50-75 s here, 2 minutes leave room
    // for a loaded machine), which a previous system with a slow network would not.
    it('a new system whose sshd never starts: its trial goes back without hands; the run fails saying so', async () => {
      const before = piState('bpi')
      const entryBefore = bootEntry()
      const bootsBefore = boots()
      const run = await runAction(bpi('bpi-no-ssh', { reboot: 'auto', 'reboot-timeout': '120' }), {
        timeoutMs: 600_000
      })
      if (run.outputs.result !== 'rolled-back') console.log(run.log.slice(-8000))
      expect(run.exitCode).not.toBe(0)
      expect(run.outputs.result).toBe('rolled-back')
      expect(run.log).toMatch(
        /::error title=.*booted the new system, but the deploy could not reach it within its boot trial's window \(120 s of its boot\)/
      )
      expect(run.summary).toContain('not confirmed, the target went back to its previous system')
      // Two boots: the new system (unreachable), then the previous one.
      expect(boots()).toBe(bootsBefore + 2)
      expect(booted()).toBe(before.current)
      expect(piState('bpi')).toMatchObject({ current: before.current, profile: before.profile })
      expect(bootEntry()).toBe(entryBefore)
      expect(trialFiles()).toBe('boot-trial.expired boot-trial.rolled-back')
      expect(onPi('cat /nix/var/nix-deploy-action/boot-trial.rolled-back', 'bpi')).toBe(
        'the deploy did not log in within 120 s'
      )
      expect(lockState()).toBe('free')
    }, 700_000)

    it('a new kernel whose network comes up 45 s into its boot: waited for, checked, confirmed; the new system runs and is the default', async () => {
      const top = fixturePath('bpi-slow-network')
      const idBefore = bootId()
      const bootsBefore = boots()
      const run = await runAction(
        bpi('bpi-slow-network', {
          reboot: 'auto',
          'health-checks': 'systemctl is-active fixture-bpi-slow.service'
        }),
        { timeoutMs: 600_000 }
      )
      if (run.exitCode !== 0) console.log(run.log.slice(-6000))
      expect(run.exitCode).toBe(0)
      expect(run.outputs).toMatchObject({ result: 'deployed', 'needs-reboot': 'true' })
      expect(run.summary).toMatch(
        /\| Reboot \| rebooted into the new system in [0-9.]+ s, checked and confirmed [0-9.]+ s later \(boot trial confirmed; booted once, then made the default\) \|/
      )
      expect(bootId()).not.toBe(idBefore)
      expect(boots()).toBe(bootsBefore + 1)
      await expectConfirmed(top)
      // The trial's record (renamed by each step, kept as boot-trial.confirmed): its first window
      // is reboot-timeout (300 s by default), not confirm-timeout (less than this boot's way to
      // sshd); its second, confirm-timeout, worked out from health-timeout with health checks.
      const record = trialRecord('confirmed')
      expect(record['login-seconds']).toBe('300')
      expect(Number(record['confirm-seconds'])).toBeGreaterThan(0)
      expect(record.new).toBe(top)
      // Booted once (nixos/boot-once.sh's U-Boot hook read the entry and emptied its file), the
      // previous system the default until the confirmation made the new one the default.
      expect(record.once).toBe(ONCE_FILE)
      expect(record['new-generation']).toMatch(/^[0-9]+$/)
      expect(onceFileBytes()).toBe(0)
    }, 700_000)

    it('a new kernel that panics (its initrd cannot mount its root): booted once, then the previous system, still the default, without hands; the run fails saying so', async () => {
      const before = piState('bpi')
      const entryBefore = bootEntry()
      const bootsBefore = boots()
      const panicsBefore = kernelPanics()
      const run = await runAction(bpi('bpi-panics', { reboot: 'auto' }), { timeoutMs: 600_000 })
      expect(run.exitCode).not.toBe(0)
      expect(run.outputs.result).toBe('rolled-back')
      expect(run.log).toMatch(/::error title=.*the new system did not reach user space on /)
      expect(run.summary).toContain('not confirmed, the target went back to its previous system')
      // Two boots: the new system's (its kernel panicked: panic=10 reset the machine), the previous one's.
      expect(boots()).toBe(bootsBefore + 2)
      expect(kernelPanics()).toBe(panicsBefore + 1)
      expect(booted()).toBe(before.current)
      expect(piState('bpi')).toMatchObject({ current: before.current, profile: before.profile })
      expect(bootEntry()).toBe(entryBefore)
      await trialUnitEnded()
      expect(trialFiles()).toBe('boot-trial.fell-back boot-trial.rolled-back')
      expect(trialRecord('fell-back')).toMatchObject({ new: fixturePath('bpi-panics'), verdict: 'fell-back' })
      // U-Boot emptied the one-shot file when it booted the entry: no later boot runs it again.
      expect(onceFileBytes()).toBe(0)
      expect(lockState()).toBe('free')
    }, 700_000)

    it('a run cancelled right after "Rebooting…", then a re-run: it takes the trial over, checks and confirms it; one consistent system', async () => {
      const top = fixturePath('bpi-gen1')
      const idBefore = bootId()
      const bootsBefore = boots()
      // Cancelled the hard way (SIGKILL: nothing of it runs after), once the reboot is scheduled.
      const first = await runAction(bpi('bpi-gen1', { reboot: 'auto' }), {
        timeoutMs: 600_000,
        onOutput: (log, child) => {
          if (/Rebooting .* into the new system on trial/.test(log)) child.kill('SIGKILL')
        }
      })
      expect(first.exitCode).toBeNull()
      expect(first.outputs.result).toBeUndefined()
      // The re-run comes once the Pi answers again (a person re-running the job a minute later).
      const deadline = Date.now() + 300_000
      const newBoot = (): boolean => {
        try {
          return bootId() !== idBefore
        } catch {
          return false
        }
      }
      while (!newBoot() && Date.now() < deadline) await new Promise(r => setTimeout(r, 2000))
      expect(booted()).toBe(top)
      // Pending: the cancelled run never logged in.
      expect(trialFiles().split(' ')).toContain('boot-trial')
      const rerun = await runAction(
        bpi('bpi-gen1', { reboot: 'auto', 'health-checks': 'systemctl is-active fixture-bpi-gen1.service' }),
        { timeoutMs: 600_000 }
      )
      if (rerun.exitCode !== 0) console.log(rerun.log.slice(-6000))
      expect(rerun.exitCode).toBe(0)
      expect(rerun.outputs).toMatchObject({ result: 'unchanged', 'needs-reboot': 'false' })
      expect(rerun.summary).toMatch(
        /\| Reboot \| an earlier run rebooted into this system on trial and did not settle it: checked and confirmed by this run in [0-9.]+ s \|/
      )
      // One boot (the cancelled run's), no other; the new system runs, is the profile and the default.
      expect(boots()).toBe(bootsBefore + 1)
      await expectConfirmed(top)
    }, 900_000)
  },
  // Its leftovers are bpi's, checked by its own tests: the other Pis may be another lane's (scripts/test.sh).
  { pis: [] }
)

import { execFile } from 'child_process'
import * as fs from 'fs'
import * as path from 'path'
import { LOCK_DIR, LOCK_SCRIPT, parseLockAnswer } from '../../src/target/lock/on-target'
import { shellCommand } from '../../src/ssh/quote'
import {
  assertNothingLeftOnPi,
  barrier,
  deployInputs,
  describeE2E,
  fixturePath,
  onPi,
  piExec,
  piState,
  resetPi,
  runAction,
  runnerView,
  testbed
} from './harness'

/**
 * What only shows with more than one thing at a time: two machines printing at once, two runs on
 * one Pi, a Pi whose clock is off, runs racing for a lock. Overlaps are forced by barriers (a
 * fixture activation waits for a file the test creates once both have started), never by timing.
 */

/** The deploy lock's script run on the Pi over OpenSSH (the same text the action runs). */
const lockOnPi = (verb: string, id: string, lease = 90): string =>
  onPi(shellCommand(['sh', '-c', LOCK_SCRIPT, 'sh', verb, LOCK_DIR, id, String(lease), `test ${id}`]))
const lockOnPiAsync = (id: string): Promise<string> =>
  new Promise(resolve =>
    execFile(
      'ssh',
      [
        '-F',
        testbed().TESTBED_SSH_CONFIG,
        'pi',
        shellCommand(['sh', '-c', LOCK_SCRIPT, 'sh', 'acquire', LOCK_DIR, id, '90', `racer ${id}`])
      ],
      { encoding: 'utf8', timeout: 60_000 },
      (_e, stdout) => resolve(String(stdout).trim().split('\n')[0])
    )
  )
const plantOwner = (lines: string[]): void => {
  onPi(
    `mkdir -p ${LOCK_DIR} && printf '%s\\n' ${lines.map(l => shellCommand([l])).join(' ')} > ${LOCK_DIR}/owner`
  )
}
const piUptime = (): number => Math.floor(Number(onPi('cut -d" " -f1 /proc/uptime')))
const piBootId = (): string => onPi('cat /proc/sys/kernel/random/boot_id')
const freeLock = (): void => {
  onPi(`rm -rf ${LOCK_DIR}`)
}

/** Makes the Pi's wall clock (its `date`) run `seconds` ahead (or behind), in its namespace only. */
function skewPiClock(seconds: number): void {
  const t = testbed().TESTBED
  const real = path.join(t, 'real-date')
  if (!fs.existsSync(real)) fs.copyFileSync('/usr/bin/date', real)
  fs.chmodSync(real, 0o755)
  const wrapper = path.join(t, `date-skewed`)
  fs.writeFileSync(wrapper, `#!/bin/sh\nexec ${real} -d "@$(( $(${real} +%s) + (${seconds}) ))" "$@"\n`, {
    mode: 0o755
  })
  piExec(['mount', '--bind', wrapper, '/usr/bin/date'])
}
function unskewPiClock(): void {
  piExec([
    'sh',
    '-c',
    'while mountpoint -q /usr/bin/date || grep -q " /usr/bin/date " /proc/self/mountinfo; do umount /usr/bin/date || break; done'
  ])
}

/** runAction options that open the barrier once the run says it waits for the deploy lock. */
function openBarrierWhenWaiting(): { onOutput: (log: string) => void; opened: () => boolean } {
  let opened = false
  return {
    onOutput: log => {
      if (!opened && /Waiting for the deploy lock/.test(log)) {
        opened = true
        barrier.open()
      }
    },
    opened: () => opened
  }
}

describeE2E('concurrency: several machines, several runs, skewed clocks', () => {
  const fixture = (...p: string[]): string => path.join(testbed().TESTBED, 'fixture', ...p)
  beforeEach(() => {
    resetPi('pi')
    resetPi('pi2')
  }, 60_000)
  beforeAll(() => {
    for (const c of ['pi-gen1', 'pi-barrier', 'pi-activation-fails', 'pi-ignores-term']) fixturePath(c)
  }, 300_000)
  afterEach(() => barrier.open())

  it('two machines with keys, activations overlapping: every mask registered before any untrusted output, no key shown', async () => {
    barrier.reset()
    const { flake: _flake, ...rest } = deployInputs('unused')
    const secrets = ['overlap-pi3-wifi-secret-5531', 'overlap-pi3b-api-token-8812']
    let opened = false
    const run = await runAction(
      {
        ...rest,
        'target-host': '',
        nixpkgs: fixture('nixpkgs'),
        network: fixture('network', 'overlap.nix'),
        parallel: '2'
      },
      {
        secrets,
        onOutput: () => {
          // Both activations are running (each waits at the barrier): let them finish.
          if (!opened && barrier.started('pi3') && barrier.started('pi3b')) {
            opened = true
            barrier.open()
          }
        }
      }
    )
    if (run.exitCode !== 0) console.log(run.log)
    expect(opened).toBe(true)
    expect(run.exitCode).toBe(0)
    expect(JSON.parse(run.outputs.results)).toMatchObject({
      pi3: { result: 'deployed' },
      pi3b: { result: 'deployed' }
    })
    // The runner's view: both keys were registered as masks, and (runAction's leak check) neither
    // shows anywhere, though each machine's untrusted output was open while the other printed.
    const view = runnerView(run.log)
    for (const s of secrets) expect(view.masks).toContain(s)
    const firstUntrusted = run.log.indexOf('::stop-commands::')
    for (const s of secrets) expect(run.log.indexOf(`::add-mask::${s}`)).toBeLessThan(firstUntrusted)
    // The activations' own lines came through, each under its machine's name.
    expect(view.shown).toContain('[pi3] pi3: past the barrier')
    expect(view.shown).toContain('[pi3b] pi3b: past the barrier')
    expect(onPi('cat /run/keys/token', 'pi2')).toBe('overlap-pi3b-api-token-8812')
    await assertNothingLeftOnPi([], 'pi')
    await assertNothingLeftOnPi([], 'pi2')
  }, 300_000)

  it("two runs on one Pi, the second failing: it reads the state under the lock and rolls back to the first run's system", async () => {
    barrier.reset()
    const x = fixturePath('pi-barrier')
    const first = runAction(deployInputs('pi-barrier'))
    await barrier.waitStarted(['pi'])
    // Once the second run finds the lock held and waits, the first may finish.
    const opener = openBarrierWhenWaiting()
    const second = await runAction(deployInputs('pi-activation-fails', { 'lock-timeout': '240' }), opener)
    const opened = opener.opened()
    const firstRun = await first
    expect(opened).toBe(true)
    expect(firstRun.outputs.result).toBe('deployed')
    expect(second.outputs.result).toBe('rolled-back')
    // What the second run saw before it changed anything: the first run's system, not gen0.
    expect(second.outputs['previous-store-path']).toBe(x)
    expect(piState()).toMatchObject({ current: x, profile: x })
    expect(onPi(`test -e ${LOCK_DIR}/owner && echo held || echo free`)).toBe('free')
    await assertNothingLeftOnPi()
  }, 300_000)

  it('a redeploy of what an unconfirmed deploy is activating waits for it, then reports unchanged', async () => {
    barrier.reset()
    const g1 = fixturePath('pi-gen1')
    const waitsForBarrier =
      'i=0; while [ ! -e /tmp/nda-barrier/go ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done'
    let firstDone = 0
    const first = runAction(
      deployInputs('pi-gen1', {
        'health-checks': waitsForBarrier,
        'health-timeout': '90',
        'confirm-timeout': '120'
      })
    ).then(r => {
      firstDone = Date.now()
      return r
    })
    // The first run has activated gen1 and waits in its health check, unconfirmed.
    for (let i = 0; i < 600 && piState().current !== g1; i++) await new Promise(r => setTimeout(r, 100))
    expect(piState().current).toBe(g1)
    const opener = openBarrierWhenWaiting()
    const second = await runAction(deployInputs('pi-gen1', { 'lock-timeout': '240' }), opener)
    const opened = opener.opened()
    const secondDone = Date.now()
    const firstRun = await first
    expect(opened).toBe(true)
    expect(firstRun.outputs.result).toBe('deployed')
    expect(second.outputs.result).toBe('unchanged')
    // It answered only once the first run had its outcome (it may finish a moment later).
    expect(secondDone).toBeGreaterThanOrEqual(firstDone - 5_000)
    expect(piState()).toMatchObject({ current: g1, profile: g1 })
  }, 300_000)

  it("the lease is kept in the Pi's own clock: a wall clock 120 s ahead or behind changes nothing", () => {
    freeLock()
    for (const skew of [120, -120]) {
      skewPiClock(skew)
      try {
        expect(Math.abs(Number(onPi('date +%s')) - Date.now() / 1000 - skew)).toBeLessThan(10)
        // A live lease is respected whatever the wall clock says...
        expect(lockOnPi('acquire', 'holder').trim()).toBe('acquired')
        const held = parseLockAnswer(lockOnPi('acquire', 'waiter'))
        expect(held.acquired).toBe(false)
        expect(!held.acquired && held.holder.secondsLeft).toBeGreaterThan(80)
        // ...and a lease that ran out by the Pi's uptime is stale, whatever the wall clock says.
        plantOwner(['crashed', `v2 ${piBootId()} ${piUptime() - 1}`, 'crashed'])
        expect(lockOnPi('acquire', 'waiter').trim()).toBe('acquired')
        expect(lockOnPi('release', 'waiter').trim()).toBe('released')
      } finally {
        unskewPiClock()
      }
    }
  }, 120_000)

  it('a lease from before a reboot is stale (uptime restarted), however far ahead its expiry', () => {
    plantOwner([
      'before-reboot',
      `v2 00000000-0000-0000-0000-000000000000 ${piUptime() + 1_000_000}`,
      'old boot'
    ])
    expect(lockOnPi('acquire', 'after-reboot').trim()).toBe('acquired')
    expect(lockOnPi('release', 'after-reboot').trim()).toBe('released')
  }, 60_000)

  it('runs racing over SSH for an expired lock: exactly one takes it', async () => {
    for (let round = 0; round < 3; round++) {
      plantOwner(['dead', `v2 ${piBootId()} ${piUptime() - 5}`, 'dead'])
      const answers = await Promise.all(Array.from({ length: 6 }, (_, i) => lockOnPiAsync(`r${round}-${i}`)))
      expect(answers.filter(a => a === 'acquired')).toHaveLength(1)
      expect(answers.filter(a => a === 'held')).toHaveLength(5)
    }
    freeLock()
  }, 120_000)

  it('an activation that hangs and ignores SIGTERM: stopped at activation-timeout, nothing of it left running, the Pi back where it was', async () => {
    const before = piState()
    const hung = fixturePath('pi-ignores-term')
    const run = await runAction(deployInputs('pi-ignores-term', { 'activation-timeout': '5' }))
    expect(run.exitCode).not.toBe(0)
    expect(run.outputs.result).toBe('rolled-back')
    // Nothing started from the hung system survives to change the Pi after the rollback.
    await assertNothingLeftOnPi([hung])
    expect(piState()).toEqual(before)
    expect(onPi(`test -e ${LOCK_DIR}/owner && echo held || echo free`)).toBe('free')
  }, 300_000)

  it('the run stopped by its timeout while the agent activates: the agent keeps the lock until its final state, then frees it', async () => {
    barrier.reset()
    const before = piState()
    const run = await runAction(deployInputs('pi-barrier', { timeout: '20', 'confirm-timeout': '5' }))
    expect(run.exitCode).not.toBe(0)
    // The action is gone; the agent still waits at the barrier and holds the lock.
    const held = parseLockAnswer(lockOnPi('acquire', 'intruder'))
    expect(held.acquired).toBe(false)
    barrier.open()
    // It activates, gets no confirmation within 5 s, rolls back, and (nobody came for its outcome)
    // releases the lock itself within 30 s of that.
    let free = false
    for (let i = 0; i < 120 && !free; i++) {
      free = onPi(`test -e ${LOCK_DIR}/owner && echo held || echo free`) === 'free'
      if (!free) await new Promise(r => setTimeout(r, 500))
    }
    expect(free).toBe(true)
    expect(piState()).toEqual(before)
    await assertNothingLeftOnPi()
  }, 300_000)
})

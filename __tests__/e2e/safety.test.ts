import * as fs from 'fs'
import {
  assertNothingLeftOnPi,
  deployInputs,
  describeE2E,
  fixturePath,
  jumpHost,
  killJumpSessions,
  onPi,
  piExec,
  piProcesses,
  piState,
  resetPi,
  runAction
} from './harness'

const sleep = (ms: number) => new Promise(r => setTimeout(r, ms))
const lockHeld = (): boolean =>
  onPi('test -f /nix/var/nix-deploy-action/lock/owner && echo held || echo free') === 'held'
/** Waits (up to 10 s) until a deploy holds the Pi's lock. */
async function lockTaken(): Promise<void> {
  for (let i = 0; i < 100 && !lockHeld(); i++) await sleep(100)
}

describeE2E('safe activation: magic rollback, health checks, reconnects', () => {
  let gen0: string
  beforeAll(() => {
    gen0 = fixturePath('pi-gen0')
    for (const c of ['pi-gen1', 'pi-gen2', 'pi-breaks-network', 'pi-slow-activation', 'pi-wrong-platform'])
      fixturePath(c)
  }, 300_000)
  // Every test starts from the Pi as installed: none depends on what an earlier one left.
  beforeEach(() => resetPi(), 60_000)

  it('a generation that takes the network down is rolled back by the target itself, which is reachable again', async () => {
    const before = piState()
    const run = await runAction(
      deployInputs('pi-breaks-network', { 'confirm-timeout': '8', 'activation-timeout': '60' })
    )
    expect(run.exitCode).not.toBe(0)
    expect(run.outputs.result).toBe('rolled-back')
    expect(run.log).toMatch(
      /could not confirm it over a new connection within confirm-timeout, so the target rolled back/
    )
    // Bounded: confirm-timeout plus a margin for reconnecting, not a hang.
    expect(run.ms).toBeLessThan(8_000 + 90_000)
    expect(piState()).toEqual(before)
    expect(before.current).toBe(gen0)
  }, 300_000)

  it('an activation agent killed half-way (no outcome) is seen at once: another agent puts the Pi back', async () => {
    const before = piState()
    const slow = fixturePath('pi-slow-activation')
    const running = runAction(deployInputs('pi-slow-activation', { 'activation-timeout': '600' }))
    // Once the agent has set the profile, while the slow system activates (6 s): kill the agent.
    let agents: number[] = []
    for (let i = 0; i < 1200 && (agents.length === 0 || piState().profile !== slow); i++) {
      await sleep(100)
      agents = piProcesses(['/run/nix-deploy-action/'])
        .filter(l => /^\d+ \S*sh \/run\/nix-deploy-action\/[0-9a-f]+\/agent\.sh /.test(l))
        .map(l => Number(l.split(' ')[0]))
    }
    // The agent, not the subshells it forks (the activation's, a command substitution's: the same
    // command line): the one whose parent is not an agent process too. A subshell may end between
    // the listing and this look: gone, it is not the agent.
    const ppid = (pid: number): number | undefined => {
      try {
        return Number(fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')[1])
      } catch {
        return undefined
      }
    }
    const main = agents.filter(p => {
      const parent = ppid(p)
      return parent !== undefined && !agents.includes(parent)
    })
    expect(main).toHaveLength(1)
    process.kill(main[0], 'SIGKILL')
    const run = await running
    expect(run.outputs.result).toBe('rolled-back')
    expect(run.log).toMatch(/::error title=.*ended without an outcome: it was killed/)
    // At once, not at activation-timeout (600 s).
    expect(run.ms).toBeLessThan(180_000)
    expect(piState()).toEqual(before)
    // Nothing of the killed activation is left running (without systemd, its process group was ended).
    await assertNothingLeftOnPi([slow])
  }, 300_000)

  it('a failing health check rolls back, and the summary names the check', async () => {
    const before = piState()
    const run = await runAction(
      deployInputs('pi-gen1', {
        'health-checks':
          'test -x /run/current-system/sw/bin/pi-tools\ntest "$(cat /run/current-system/etc/motd)" = "generation 9"',
        'health-timeout': '4',
        'confirm-timeout': '30'
      })
    )
    expect(run.exitCode).not.toBe(0)
    expect(run.outputs.result).toBe('rolled-back')
    expect(run.summary).toContain('health check failed')
    expect(run.summary).toContain('generation 9')
    expect(piState()).toEqual(before)
  }, 300_000)

  it('passing health checks, then a confirmation over a new connection: deployed', async () => {
    const run = await runAction(
      deployInputs('pi-gen1', {
        'health-checks': 'test -x /run/current-system/sw/bin/pi-tools',
        'health-timeout': '10'
      })
    )
    expect(run.exitCode).toBe(0)
    expect(run.outputs.result).toBe('deployed')
    expect(run.log).toContain('Confirming over a new connection')
    expect(run.summary).toMatch(/Health checks \| health checks passed on attempt 1/)
    expect(run.summary).toMatch(/Confirmed \| over a new connection/)
    expect(piState().current).toBe(fixturePath('pi-gen1'))
  }, 300_000)

  it('an activation that exceeds activation-timeout is stopped and rolled back', async () => {
    const before = piState()
    const run = await runAction(deployInputs('pi-slow-activation', { 'activation-timeout': '2' }))
    expect(run.exitCode).not.toBe(0)
    expect(run.outputs.result).toBe('rolled-back')
    expect(run.summary).toContain('activation did not finish within 2 s')
    expect(piState()).toEqual(before)
  }, 300_000)

  it('the SSH connection cut mid-activation: the activation completes and the action reports it after reconnecting', async () => {
    const pending = runAction(deployInputs('pi-slow-activation'))
    // Wait until the agent runs its activation (6 s of it), then kill every SSH session on the jump
    // host (the listener stays). (The agent's own line: a switch that waits runs as test, and the
    // boot loader's line, which named the system first, comes after the confirmation.)
    const activating = (): boolean =>
      /switch-to-configuration (switch|test)\b/.test(
        onPi('cat /run/nix-deploy-action/*/log 2>/dev/null; true')
      )
    for (let i = 0; i < 100 && !activating(); i++) await sleep(200)
    expect(activating()).toBe(true)
    expect(killJumpSessions()).toBeGreaterThan(0)
    const run = await pending
    expect(run.log).toMatch(/Connection to the target lost.*reconnecting/)
    expect(run.exitCode).toBe(0)
    expect(run.outputs.result).toBe('deployed')
    expect(piState()).toMatchObject({
      current: fixturePath('pi-slow-activation'),
      profile: fixturePath('pi-slow-activation')
    })
  }, 300_000)

  it('a configuration for another platform is refused before anything is copied', async () => {
    const before = piState()
    const wrong = fixturePath('pi-wrong-platform')
    const run = await runAction(deployInputs('pi-wrong-platform'))
    expect(run.exitCode).not.toBe(0)
    expect(run.log).toMatch(
      /::error title=.*the configuration is for x86_64-linux but target root@10\.99\.(2|5|13|14)\.2 runs aarch64-linux/
    )
    expect(run.log).not.toContain('Copying')
    expect(onPi(`test -e ${wrong} && echo present || echo absent`)).toBe('absent')
    expect(piState()).toEqual(before)
  }, 300_000)

  it("not enough space on the target's /nix: refused before copying", async () => {
    const before = piState()
    const free = Number(piExec(['sh', '-c', "df -Pk /nix | awk 'NR==2 {print $4}'"]))
    piExec(['fallocate', '-l', `${(free - 8 * 1024) * 1024}`, '/nix/filler'])
    try {
      const run = await runAction(deployInputs('pi-gen2'))
      expect(run.exitCode).not.toBe(0)
      expect(run.log).toMatch(
        /::error title=.*has [0-9.]+ MiB free on \/nix but the copy needs about [0-9.]+ MiB/
      )
      expect(run.log).not.toContain('Copying')
    } finally {
      piExec(['rm', '-f', '/nix/filler'])
    }
    expect(piState()).toEqual(before)
  }, 300_000)
})

describeE2E('deploy lock, sudo and generation retention', () => {
  beforeAll(() => {
    for (const c of ['pi-gen1', 'pi-gen2', 'pi-slow-activation']) fixturePath(c)
  }, 300_000)
  beforeEach(() => resetPi(), 60_000)

  it('two deploys at once: the second waits for the first; the Pi ends on one complete generation', async () => {
    const first = runAction(deployInputs('pi-slow-activation'))
    await lockTaken()
    const second = await runAction(deployInputs('pi-gen1'))
    const firstRun = await first
    expect(firstRun.outputs.result).toBe('deployed')
    expect(second.outputs.result).toBe('deployed')
    expect(second.log).toMatch(
      /Waiting for the deploy lock on target root@10\.99\.(2|5|13|14)\.2, held by nix-deploy-action/
    )
    expect(piState()).toMatchObject({ current: fixturePath('pi-gen1'), profile: fixturePath('pi-gen1') })
  }, 300_000)

  it('with a short lock-timeout the second deploy fails clearly, naming the holder', async () => {
    const first = runAction(deployInputs('pi-slow-activation'))
    await lockTaken()
    const second = await runAction(deployInputs('pi-gen2', { 'lock-timeout': '2' }))
    expect(second.exitCode).not.toBe(0)
    expect(second.log).toMatch(
      /::error title=.*target root@10\.99\.(2|5|13|14)\.2 is locked by another deploy: nix-deploy-action a run outside GitHub Actions/
    )
    expect((await first).outputs.result).toBe('deployed')
    expect(piState().current).toBe(fixturePath('pi-slow-activation'))
  }, 300_000)

  it("a crashed run's expired lease is taken over", async () => {
    piExec([
      'sh',
      '-c',
      'mkdir -p /nix/var/nix-deploy-action/lock && printf "dead\\n1\\ncrashed run\\n" > /nix/var/nix-deploy-action/lock/owner'
    ])
    const run = await runAction(deployInputs('pi-gen2', { 'lock-timeout': '2' }))
    expect(run.outputs.result).toBe('deployed')
    expect(lockHeld()).toBe(false)
  }, 300_000)

  it('a non-root user with passwordless sudo deploys through sudo -n', async () => {
    const run = await runAction(
      deployInputs('pi-gen1', { 'target-user': 'nda-deploy', 'jump-host': jumpHost() })
    )
    expect(run.exitCode).toBe(0)
    expect(run.outputs.result).toBe('deployed')
    expect(piState().current).toBe(fixturePath('pi-gen1'))
  }, 300_000)

  it('a user whose sudo wants a password fails at once and clearly', async () => {
    const before = piState()
    const run = await runAction(
      deployInputs('pi-gen2', { 'target-user': 'nda-nosudo', 'jump-host': jumpHost() })
    )
    expect(run.exitCode).not.toBe(0)
    expect(run.log).toMatch(/::error title=.*sudo on the target asks nda-nosudo for a password/)
    expect(run.ms).toBeLessThan(60_000)
    expect(piState()).toEqual(before)
  }, 300_000)

  it('keep-generations removes old generations, keeping the newest and the booted one', async () => {
    expect((await runAction(deployInputs('pi-gen1'))).exitCode).toBe(0)
    expect((await runAction(deployInputs('pi-gen2'))).exitCode).toBe(0)
    expect((await runAction(deployInputs('pi-gen0'))).exitCode).toBe(0)
    // Generations 1 (gen0, which the Pi booted), 2 (gen1), 3 (gen2), 4 (gen0 again).
    expect(piState().generations).toHaveLength(4)
    const run = await runAction(deployInputs('pi-gen1', { 'keep-generations': '2' }))
    expect(run.outputs.result).toBe('deployed')
    const num = (l: string) => Number(l.split('-')[1])
    // The newest two (4, and the new 5). The booted system (gen0) is in 4, so 1 need not stay.
    expect(
      piState()
        .generations.map(num)
        .sort((a, b) => a - b)
    ).toEqual([4, 5])
    expect(run.summary).toMatch(/Old generations deleted \| 1, 2, 3/)
  }, 300_000)

  it('keep-generations keeps the generation of the booted system when no kept one holds it', async () => {
    expect((await runAction(deployInputs('pi-gen1'))).exitCode).toBe(0)
    expect((await runAction(deployInputs('pi-gen2'))).exitCode).toBe(0)
    const run = await runAction(deployInputs('pi-gen1', { 'keep-generations': '1' }))
    expect(run.outputs.result).toBe('deployed')
    // Kept: 4 (the newest, gen1) and 1 (gen0: the Pi booted it). Deleted: 2 and 3.
    expect(piState().generations.sort()).toEqual(['system-1-link', 'system-4-link'])
    expect(run.summary).toMatch(/Old generations deleted \| 2, 3/)
  }, 300_000)
})

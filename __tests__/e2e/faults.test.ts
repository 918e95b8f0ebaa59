import { execFileSync } from 'child_process'
import * as fs from 'fs'
import * as path from 'path'
import {
  deployInputs,
  describeE2E,
  fixturePath,
  killJumpSessions,
  MAIN_PI,
  onPi,
  piExec as piExecArgs,
  piState,
  resetPi,
  runAction,
  testbed
} from './harness'

/**
 * Faults in the middle of a deploy, each verifying the Pi afterwards. The copy is slowed down (the
 * jump host -> Pi link limited with tc) so there is a "middle" to hit.
 */
const jumpNs = (...args: string[]): string =>
  execFileSync('ip', ['netns', 'exec', 'nda-jump', ...args], { encoding: 'utf8' })
const piExec = (...args: string[]): string => piExecArgs(args)
/** The jump host's link towards the Pi under test (testbed/setup.sh, systemd-pi.sh). */
const PI_LINK = { pi: 'eth1', pi2: 'eth2', pi3: 'eth7', spi: 'eth3', spi2: 'eth5', spi3: 'eth8' }[MAIN_PI]
const limitLink = (rate: string): void =>
  void jumpNs(
    'tc',
    'qdisc',
    'replace',
    'dev',
    PI_LINK,
    'root',
    'tbf',
    'rate',
    rate,
    'burst',
    '32kb',
    'latency',
    '100ms'
  )
const unlimitLink = (): void => {
  try {
    jumpNs('tc', 'qdisc', 'del', 'dev', PI_LINK, 'root')
  } catch {
    // no qdisc: nothing to remove
  }
}
/** The Pi's store is consistent: every registered path is complete and unmodified. */
const verifyPiStore = (): string =>
  piExec('sh', '-c', 'nix-store --verify --check-contents 2>&1; echo "exit=$?"')

describeE2E('faults during a deploy leave the Pi consistent, and a re-run finishes the job', () => {
  let bench: string
  beforeAll(() => {
    bench = fixturePath('pi-bench')
    fixturePath('pi-slow-activation')
  }, 600_000)
  beforeEach(() => resetPi(), 60_000)
  afterEach(() => {
    unlimitLink()
    jumpNs('ip', 'link', 'set', PI_LINK, 'up')
    // The jump host's sshd, if a test killed it (testbed/repair.sh).
    execFileSync('bash', [`${__dirname}/../../testbed/repair.sh`], { stdio: 'ignore' })
  }, 120_000)

  it('the link cut mid-copy: a clear error in bounded time, nothing half-registered, a re-run copies only the rest', async () => {
    const before = piState()
    limitLink('20mbit')
    let cut = false
    const run = await runAction(deployInputs('pi-bench'), {
      onOutput: log => {
        if (!cut && /sent [0-9.]+ MiB of/.test(log)) {
          cut = true
          jumpNs('ip', 'link', 'set', PI_LINK, 'down')
        }
      }
    })
    expect(cut).toBe(true)
    expect(run.exitCode).not.toBe(0)
    expect(run.log).toMatch(
      /::error title=nix-deploy-action%3A (copy|connect) failed::lost the SSH connection to target root@10\.99\.(2|5|13|14)\.2 while /
    )
    // The message says what was being done, in words: never the text of a remote script.
    const message = /::error title=[^\n]*?::(lost the SSH connection[^\n]*?)%0A/.exec(run.log)![1]
    expect(message).not.toMatch(/\$|set -f|2>\/dev\/null|sh -c/)
    // keepalive (10 s x 3) notices the dead link: bounded, not a hang.
    expect(run.ms).toBeLessThan(120_000)
    jumpNs('ip', 'link', 'set', PI_LINK, 'up')
    unlimitLink()
    expect(piState()).toEqual(before)
    expect(verifyPiStore()).toMatch(/exit=0$/)
    const rerun = await runAction(deployInputs('pi-bench'))
    expect(rerun.exitCode).toBe(0)
    expect(Number(rerun.outputs['copied-bytes'])).toBeLessThan(
      Number(rerun.outputs['closure-size']) - 10 * 1024 * 1024
    )
    expect(piState().current).toBe(bench)
  }, 600_000)

  it("the jump host's sshd killed mid-copy: a clear error, the Pi consistent, a re-run succeeds", async () => {
    const before = piState()
    limitLink('20mbit')
    let killed = false
    const run = await runAction(deployInputs('pi-bench'), {
      onOutput: log => {
        if (!killed && /sent [0-9.]+ MiB of/.test(log)) {
          killed = true
          killJumpSessions({ listener: true })
        }
      }
    })
    expect(killed).toBe(true)
    expect(run.exitCode).not.toBe(0)
    expect(run.log).toMatch(/::error title=.*lost the SSH connection to target root@10\.99\.(2|5|13|14)\.2/)
    unlimitLink()
    execFileSync('bash', [`${__dirname}/../../testbed/repair.sh`], { stdio: 'ignore' })
    expect(piState()).toEqual(before)
    expect(verifyPiStore()).toMatch(/exit=0$/)
    const rerun = await runAction(deployInputs('pi-bench'))
    expect(rerun.outputs.result).toBe('deployed')
  }, 600_000)

  it("the main step killed mid-copy: the post step, run as for a cancelled step, removes the run's files", async () => {
    limitLink('20mbit')
    const run = await runAction(deployInputs('pi-bench'), {
      onOutput: (log, child) => {
        if (/Copying \d+ of/.test(log)) child.kill('SIGKILL')
      }
    })
    expect(run.exitCode).toBeNull()
    // The directory was recorded in the state before anything was written into it.
    const dir = run.state.tempDir
    expect(dir).toMatch(/nix-deploy-action-/)
    expect(fs.existsSync(dir)).toBe(true)
    const post = await runAction({}, { state: run.state, runnerTemp: run.runnerTemp })
    expect(post.exitCode).toBe(0)
    expect(fs.existsSync(dir)).toBe(false)
  }, 600_000)

  it("the Pi's disk fills up during the copy: a clear error, no partial path, profile untouched", async () => {
    const before = piState()
    limitLink('20mbit')
    let filled = false
    const run = await runAction(deployInputs('pi-bench'), {
      onOutput: log => {
        if (!filled && /Copying \d+ of/.test(log)) {
          filled = true
          // Something else on the Pi takes the space the preflight saw as free.
          piExec(
            'sh',
            '-c',
            'fallocate -l "$(( $(df -Pk /nix | awk "NR==2 {print \\$4}") * 1024 - 4194304 ))" /nix/filler'
          )
        }
      }
    })
    try {
      expect(filled).toBe(true)
      expect(run.exitCode).not.toBe(0)
      expect(run.log).toMatch(
        /::error title=.*nix-store --import on target root@10\.99\.(2|5|13|14)\.2 failed/
      )
      expect(run.log).toMatch(/out of disk space/)
      expect(piState()).toEqual(before)
      expect(verifyPiStore()).toMatch(/exit=0$/)
      expect(onPi(`test -e ${bench} && echo present || echo absent`)).toBe('absent')
    } finally {
      piExec('rm', '-f', '/nix/filler')
    }
  }, 600_000)

  it('a timeout during the build still reports what the run knew: its plan, its warnings', async () => {
    fs.writeFileSync(path.join(testbed().TESTBED, 'fixture', 'slow-build-nonce'), `${Date.now()}`)
    const run = await runAction(
      deployInputs('pi-slow-build', { mode: 'boot', 'health-checks': 'true', timeout: '6' })
    )
    expect(run.exitCode).not.toBe(0)
    expect(run.log).toMatch(/::error title=.*the deploy did not finish within timeout \(6 s\)/)
    // The plan's warning, known before the build began, is annotated and in the summary.
    expect(run.log).toContain('::warning::health-checks are not run in mode boot')
    expect(run.summary).toContain('health-checks are not run in mode boot')
    expect(run.summary).toMatch(/\| Mode \| `?boot/)
    expect(run.outputs.result).toBe('failed')
  }, 120_000)

  it('the whole-run timeout fails the step at once; the Pi rolls itself back (no confirmation)', async () => {
    const before = piState()
    const run = await runAction(deployInputs('pi-slow-activation', { timeout: '8', 'confirm-timeout': '5' }))
    expect(run.exitCode).not.toBe(0)
    // The activation alone takes 6 of the 8 s: either the deadline fails the run first, or the run
    // sees it coming and aborts instead of confirming (a confirmation could land after the failure).
    expect(run.log).toMatch(
      /::error title=.*(the deploy did not finish within timeout \(8 s\)|the run's timeout was about to pass)/
    )
    expect(run.log).not.toContain('Confirming over a new connection')
    expect(run.ms).toBeLessThan(30_000)
    // The agent finishes the activation, waits confirm-timeout, and rolls back by itself: its
    // current system and its profile back as they were (looked at each second, for at most 60 s).
    const same = (): boolean => JSON.stringify(piState()) === JSON.stringify(before)
    for (let i = 0; i < 60 && !same(); i++) await new Promise(r => setTimeout(r, 1000))
    expect(piState()).toEqual(before)
  }, 300_000)
})

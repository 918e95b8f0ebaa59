import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { deployInputs, describeE2E, fixturePath, piState, resetPi, runAction, testbed } from './harness'

/**
 * proxy-command with real tunnels that are not ssh2: socat run inside the jump host's network
 * namespace (as cloudflared or `tailscale nc` would be: a program whose stdin/stdout reach the
 * Pi), and OpenSSH's own client (`ssh -W`) through the jump host. Each proxy records its pid and
 * what it was started for, so the tests can check that each connection had its own and that none is
 * left running.
 */
describeE2E('proxy-command: any tunnel on the runner carries the SSH connection', () => {
  let dir: string
  const proxyLog = (): string[] =>
    fs.existsSync(path.join(dir, 'log'))
      ? fs.readFileSync(path.join(dir, 'log'), 'utf8').trim().split('\n')
      : []
  /** The pids the proxies recorded that still run (a zombie counts as gone). */
  const stillRunning = (): number[] =>
    proxyLog()
      .map(l => Number(l.split(' ')[0]))
      .filter(pid => {
        try {
          return !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'))
        } catch {
          return false
        }
      })
  /** Without a jump host: the proxy is the only way to the Pi (the runner has no route to 10.99.2.0/24). */
  const viaProxy = (config: string, proxy: string, extra: Record<string, string> = {}) =>
    deployInputs(config, {
      'jump-host': '',
      'proxy-command': `echo "$$ %n %h %p" >> ${dir}/log; ${proxy}`,
      ...extra
    })
  const socat = 'exec ip netns exec nda-jump socat - TCP:%h:%p'

  beforeAll(() => {
    for (const c of ['pi-gen1', 'pi-gen2']) fixturePath(c)
  }, 300_000)
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-proxy-e2e-'))
    resetPi()
  }, 60_000)

  it('socat in the jump host namespace: a full deploy, its confirmation over a proxy of its own, nothing left running', async () => {
    const run = await runAction(viaProxy('pi-gen1', socat))
    expect(run.exitCode).toBe(0)
    expect(run.outputs).toMatchObject({ result: 'deployed', 'store-path': fixturePath('pi-gen1') })
    expect(piState().current).toBe(fixturePath('pi-gen1'))
    // The magic-rollback confirmation dialled a fresh connection: a proxy of its own.
    expect(run.summary).toMatch(/Confirmed \| over a new connection/)
    const log = proxyLog()
    expect(log.length).toBeGreaterThanOrEqual(2)
    for (const l of log)
      expect(l).toMatch(new RegExp(`^\\d+ ${testbed().TESTBED_PI} ${testbed().TESTBED_PI} 22$`))
    expect(stillRunning()).toEqual([])
  }, 300_000)

  it("OpenSSH's ssh -W through the jump host as the proxy", async () => {
    const run = await runAction(
      viaProxy('pi-gen2', `exec ssh -F ${testbed().TESTBED_SSH_CONFIG} -W %h:%p jump`)
    )
    expect(run.exitCode).toBe(0)
    expect(run.outputs.result).toBe('deployed')
    expect(piState().current).toBe(fixturePath('pi-gen2'))
    expect(stillRunning()).toEqual([])
  }, 300_000)

  it('a proxy that hangs: fails within connect-timeout naming the proxy, nothing left running, the Pi untouched', async () => {
    const before = piState()
    const run = await runAction(viaProxy('pi-gen1', 'exec sleep 600', { 'connect-timeout': '5' }))
    expect(run.exitCode).not.toBe(0)
    expect(run.outputs.result).toBe('failed')
    expect(run.log).toMatch(
      /::error title=.*did not answer within the connect timeout \(through proxy-command/
    )
    expect(stillRunning()).toEqual([])
    expect(piState()).toEqual(before)
  }, 300_000)

  it('a proxy that exits: fails at once with its exit status and its last words', async () => {
    const run = await runAction(viaProxy('pi-gen1', 'echo "tunnel: access denied for %h" >&2; exit 7'))
    expect(run.exitCode).not.toBe(0)
    expect(run.log).toMatch(
      /::error title=.*proxy-command for target root@10\.99\.2\.2 ended \(exit status 7\) before the SSH connection was up \(through proxy-command, which printed: tunnel: access denied for 10\.99\.2\.2\)/
    )
  }, 300_000)

  it('a network deploy: one proxy per machine with its own %n and %h, through the same template', async () => {
    resetPi('pi2')
    const fixture = (...p: string[]): string => path.join(testbed().TESTBED, 'fixture', ...p)
    const { flake: _flake, ...inputs } = viaProxy('unused', socat)
    const run = await runAction({
      ...inputs,
      'target-host': '',
      network: `${fixture('network', 'rpi.nix')}\n${fixture('network', 'lan.nix')}`,
      nixpkgs: fixture('nixpkgs')
    })
    expect(run.exitCode).toBe(0)
    const started = proxyLog().map(l => l.split(' ').slice(1, 3).join(' '))
    expect(started).toContain(`pi3 ${testbed().TESTBED_PI}`)
    expect(started).toContain(`pi3b ${testbed().TESTBED_PI2}`)
    expect(stillRunning()).toEqual([])
  }, 300_000)

  it('a token that is not one of OpenSSH’s is refused before anything runs', async () => {
    const run = await runAction(viaProxy('pi-gen1', 'nc %h %P'))
    expect(run.exitCode).not.toBe(0)
    expect(run.summary).toMatch(/proxy-command has an unknown token %P/)
    expect(proxyLog()).toEqual([])
  }, 120_000)
})

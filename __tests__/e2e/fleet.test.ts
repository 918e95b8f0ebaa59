import { execFileSync } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import {
  countingJumpForwarder,
  deployInputs,
  describeE2E,
  fleetDown,
  fleetExec,
  fleetKnownHosts,
  fleetUp,
  lightFleetNetwork,
  runAction,
  testbed
} from './harness'

/**
 * A fleet at scale: four light Pis on one bridge behind the jump host (testbed/fleet.sh; the bench
 * runs twelve), deployed in one run. Every SSH session reaches them through one TCP connection to
 * the jump host, counted by a forwarder in front of it: sshd's MaxStartups (10:30:100) refuses
 * parallel handshakes from a client that dials the bastion once per machine.
 */
const FLEET = 4

describeE2E(`a fleet of ${FLEET} Pis behind one jump host`, () => {
  let hosts: string[] = []
  let knownHosts = ''
  let forwarder: Awaited<ReturnType<typeof countingJumpForwarder>>
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-fleet-'))
  const fixture = (...p: string[]): string => path.join(testbed().TESTBED, 'fixture', ...p)

  /**
   * A network file of every fleet Pi with this motd, all with the same system (so it is built once)
   * unless `extra` gives Pi i (from 0) a module of its own, defined in `extra.modules` (Nix let
   * bindings).
   */
  function network(motd: string, extra?: { modules: string; of: (i: number) => string }): string {
    return lightFleetNetwork(path.join(dir, `fleet-${motd}.nix`), hosts, motd, extra)
  }

  /**
   * A network file where pf1's system carries `noiseBytes` of incompressible data (a copy that
   * takes a while on a slowed link) and every other Pi's activation takes `slowSeconds`.
   */
  function mixedNetwork(tag: string, noiseBytes: number, slowSeconds: number): string {
    return network(tag, {
      modules: `  noisy = { pkgs, ... }: {
    environment.systemPackages = [
      (pkgs.fixture.run "noise-${tag}" "mkdir -p $out/share; head -c ${noiseBytes} /dev/urandom > $out/share/noise")
    ];
  };
  slow = { ... }: { system.activationScripts.slow = "sleep ${slowSeconds}"; };`,
      of: i => (i === 0 ? 'noisy' : 'slow')
    })
  }

  function inputs(motd: string, extra: Record<string, string> = {}): Record<string, string> {
    const { flake: _flake, ...rest } = deployInputs('unused')
    return {
      ...rest,
      'target-host': '',
      nixpkgs: fixture('nixpkgs'),
      network: network(motd),
      'jump-host': `10.99.1.1:${forwarder.port}`,
      'known-hosts': knownHosts,
      parallel: String(FLEET),
      ...extra
    }
  }

  const running = (): string[] => hosts.map((_, i) => fleetExec(i + 1, 'readlink /run/current-system'))

  beforeAll(async () => {
    hosts = fleetUp(FLEET)
    forwarder = await countingJumpForwarder()
    knownHosts = fleetKnownHosts(forwarder.port)
  }, 300_000)

  afterAll(() => {
    forwarder?.close()
    fleetDown()
    fs.rmSync(dir, { recursive: true, force: true })
  }, 120_000)

  it('deploys every Pi in one run through one connection to the jump host; again: all unchanged, still one', async () => {
    const before = forwarder.count()
    const run = await runAction(inputs('fleet-a'))
    expect(run.exitCode).toBe(0)
    const results = JSON.parse(run.outputs.results) as Record<
      string,
      { result: string; 'store-path': string }
    >
    expect(Object.keys(results).sort()).toEqual(hosts.map((_, i) => `pf${i + 1}`).sort())
    for (const r of Object.values(results)) expect(r.result).toBe('deployed')
    // One system for all (one build), each Pi running it.
    expect(running()).toEqual(hosts.map(() => run.outputs['store-path']))
    expect(forwarder.count() - before).toBe(1)

    const again = await runAction(inputs('fleet-a'))
    expect(again.exitCode).toBe(0)
    for (const r of Object.values(JSON.parse(again.outputs.results) as Record<string, { result: string }>))
      expect(r.result).toBe('unchanged')
    expect(forwarder.count() - before).toBe(2)
  }, 600_000)

  it("one Pi's link cut mid-copy: it fails in bounded time, consistent; the others deploy and confirm over the same jump host connection", async () => {
    const jumpNs = (...args: string[]): string =>
      execFileSync('ip', ['netns', 'exec', 'nda-jump', ...args], { encoding: 'utf8' })
    const before = running()
    const opened = forwarder.count()
    // pf1's bridge port on the jump host (testbed/fleet.sh): slowed, so there is a middle to cut.
    jumpNs(
      'tc',
      'qdisc',
      'replace',
      'dev',
      'f1',
      'root',
      'tbf',
      'rate',
      '2mbit',
      'burst',
      '32kb',
      'latency',
      '100ms'
    )
    let cut = false
    try {
      const run = await runAction(
        { ...inputs('unused'), network: mixedNetwork(`cut-${Date.now()}`, 6_000_000, 15) },
        {
          timeoutMs: 150_000,
          onOutput: log => {
            if (!cut && /\[pf1\][^\n]* (MiB|KiB) on the wire/.test(log)) {
              cut = true
              jumpNs('ip', 'link', 'set', 'f1', 'down')
            }
          }
        }
      )
      if (!cut)
        console.log(
          run.log
            .split('\n')
            .filter(l => /pf1|copy|Copy/.test(l))
            .join('\n')
            .slice(-4000)
        )
      expect(cut).toBe(true)
      if (run.exitCode !== 1) console.log(run.log.slice(-6000))
      expect(run.exitCode).toBe(1)
      const results = JSON.parse(run.outputs.results) as Record<string, { result: string }>
      expect(results.pf1.result).toBe('failed')
      for (let i = 2; i <= FLEET; i++) expect(results[`pf${i}`].result).toBe('deployed')
      // The others' confirmations (after their 15 s activations, so after the cut at the first
      // progress line, 10 s into the copy) each went over a
      // new connection to their Pi, through the one jump host connection that also carried pf1's.
      expect(run.summary).toMatch(new RegExp(`Confirmed \\| over a new connection`))
      expect(forwarder.count() - opened).toBe(1)
      expect(run.log).toMatch(/::error[^\n]*lost the SSH connection to target root@10\.99\.10\.11/)
      // keepalive (10 s x 3) notices the dead link: bounded, not a hang.
      expect(run.ms).toBeLessThan(150_000)
    } finally {
      jumpNs('ip', 'link', 'set', 'f1', 'up')
      try {
        jumpNs('tc', 'qdisc', 'del', 'dev', 'f1', 'root')
      } catch {
        // no qdisc: nothing to remove
      }
    }
    // pf1 as it was, its store consistent: nothing half-registered.
    expect(running()[0]).toBe(before[0])
    expect(fleetExec(1, 'nix-store --verify --check-contents 2>&1; echo "exit=$?"')).toMatch(/exit=0$/)
  }, 600_000)

  it('rollback-fleet in batches of 2: the last Pi fails its health check, so all are put back, over the same one connection', async () => {
    const first = await runAction(inputs('fleet-b'))
    expect(first.exitCode).toBe(0)
    const before = running()
    const generations = hosts.map((_, i) =>
      fleetExec(i + 1, 'ls /nix/var/nix/profiles | grep "^system-" | sort')
    )
    const opened = forwarder.count()
    const last = hosts[hosts.length - 1].replace(/[.]/g, '[.]')
    const run = await runAction(
      inputs('fleet-c', {
        rollout: '2',
        'rollback-fleet': 'true',
        'health-checks': `! ip -br addr | grep -q "${last}/"`,
        'health-timeout': '5'
      })
    )
    expect(run.exitCode).toBe(1)
    const results = JSON.parse(run.outputs.results) as Record<string, { result: string }>
    for (const r of Object.values(results)) expect(r.result).toBe('rolled-back')
    expect(running()).toEqual(before)
    expect(
      hosts.map((_, i) => fleetExec(i + 1, 'ls /nix/var/nix/profiles | grep "^system-" | sort'))
    ).toEqual(generations)
    expect(run.summary.split('\n')[0]).toMatch(
      new RegExp(`\\(1 of ${FLEET} machines; ${FLEET - 1} rolled back by rollback-fleet\\)$`)
    )
    expect(forwarder.count() - opened).toBe(1)
  }, 600_000)
})

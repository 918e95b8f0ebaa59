import { ChildProcess, execFileSync } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { DeployPlanDoc, deployPlanProblems } from '../../src/nix/deploy-plan'
import {
  CacheRequest,
  countingJumpForwarder,
  deployInputs,
  describeE2E,
  fleetDown,
  fleetExec,
  fleetKnownHosts,
  fleetUp,
  lightFleetNetwork,
  manyStorePaths,
  narSizes,
  runAction,
  startCacheServer,
  testbed
} from './harness'

/**
 * A fleet past one job (issue #35): a build job publishes every closure to a binary cache served
 * over HTTP (testbed/cache-server.js in the jump host's namespace, as an S3 bucket or a cache server
 * on the site's network would be) and plans three shards; three shard jobs, started at once as
 * separate action processes with nothing shared but the plan, deploy their Pis from it: each Pi
 * fetches its closure from the cache itself, the runner evaluates and builds nothing and sends
 * only SSH's few KiB per Pi through the jump host.
 */
const FLEET = 6
/** Store paths a real NixOS system has, about: the survey must not carry a list of them. */
const THOUSAND = 1000

describeE2E('deploy-plan: shard jobs deploy from the binary cache, building nothing', () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-shards-'))
  const denyFile = path.join(work, 'deny')
  let hosts: string[] = []
  let knownHosts = ''
  let cacheUri = ''
  let cache: Awaited<ReturnType<typeof startCacheServer>>
  let forwarder: Awaited<ReturnType<typeof countingJumpForwarder>>
  let signing: { secret: string; public: string }

  const cacheLog = (): CacheRequest[] => cache.requests()

  beforeAll(async () => {
    hosts = fleetUp(FLEET)
    execFileSync('nix-store', ['--generate-binary-cache-key', 'nda-shards-1', `${work}/sk`, `${work}/pk`])
    signing = {
      secret: fs.readFileSync(`${work}/sk`, 'utf8'),
      public: fs.readFileSync(`${work}/pk`, 'utf8').trim()
    }
    cache = await startCacheServer(path.join(work, 'cache'), denyFile)
    cacheUri = cache.uri
    forwarder = await countingJumpForwarder()
    knownHosts = fleetKnownHosts(forwarder.port)
  }, 300_000)

  afterAll(() => {
    forwarder?.close()
    cache?.close()
    fleetDown()
    fs.rmSync(work, { recursive: true, force: true })
  }, 120_000)

  /**
   * The build job: every Pi's system built once, published to the cache, planned in 3 shards. With
   * `paths`, each system has that many more store paths (tiny files, as many as a real NixOS
   * closure has: the same for every Pi), which the shards must not send the Pis a list of.
   */
  async function buildJob(motd: string, paths = 0): Promise<{ text: string; plan: DeployPlanDoc }> {
    const run = await runAction({
      // 2 MiB of incompressible data in every Pi's new system: what a copy through the runner would carry.
      network: lightFleetNetwork(path.join(work, `${motd}.nix`), hosts, motd, {
        modules: `  noisy = { pkgs, ... }: {
    environment.systemPackages = [
      (pkgs.fixture.run "noise-${motd}" "mkdir -p $out/share; head -c 2097152 /dev/urandom > $out/share/noise")
    ];
    ${manyStorePaths(paths)}
  };`,
        of: () => 'noisy'
      }),
      nixpkgs: path.join(testbed().TESTBED, 'fixture', 'nixpkgs'),
      mode: 'build',
      'nix-options': 'substituters =',
      'publish-to': cacheUri,
      'signing-key': signing.secret,
      shards: '3'
    })
    if (run.exitCode !== 0) console.log(run.log)
    expect(run.exitCode).toBe(0)
    const text = run.outputs['deploy-plan']
    const { plan, problems } = deployPlanProblems(text)
    expect(problems).toEqual([])
    return { text, plan: plan! }
  }

  /**
   * A shard job: nothing but the plan and the connection's inputs, in a RUNNER_TEMP of its own, its
   * Nix's cache of .narinfo files empty as on a fresh runner (the build job's upload left one here).
   */
  function shardJob(
    plan: string,
    shard: string,
    extra: Record<string, string> = {},
    opts: Parameters<typeof runAction>[1] = {}
  ) {
    opts = { ...opts, env: { XDG_CACHE_HOME: fs.mkdtempSync(path.join(work, 'xdg-')), ...opts.env } }
    const { flake: _flake, 'target-host': _host, ...connection } = deployInputs('unused')
    return runAction(
      {
        ...connection,
        'deploy-plan': plan,
        shard,
        'jump-host': `10.99.1.1:${forwarder.port}`,
        'known-hosts': knownHosts,
        ...extra
      },
      opts
    )
  }

  /** The fleet's last job: mode report over the whole plan, its own RUNNER_TEMP too. */
  function reportJob(plan: string, extra: Record<string, string> = {}) {
    const { flake: _flake, 'target-host': _host, ...connection } = deployInputs('unused')
    return runAction({
      ...connection,
      'deploy-plan': plan,
      mode: 'report',
      'jump-host': `10.99.1.1:${forwarder.port}`,
      'known-hosts': knownHosts,
      ...extra
    })
  }

  it('three shard jobs at once: each Pi fetches its closure from the cache; the runner builds nothing and sends only SSH', async () => {
    const { text, plan } = await buildJob('shards-a', THOUSAND)
    expect(plan.shards.map(s => s.machines)).toEqual([
      ['pf1', 'pf2'],
      ['pf3', 'pf4'],
      ['pf5', 'pf6']
    ])
    const top = plan.machines[0].storePath
    const gen0 = fleetExec(1, 'readlink /run/current-system')
    // What each Pi lacks of the new system: what a copy through the runner would carry.
    const sizes = narSizes(top)
    expect(sizes.size).toBeGreaterThan(THOUSAND)
    const absent = new Set(
      fleetExec(1, `for p in ${[...sizes.keys()].join(' ')}; do test -e $p || echo $p; done`).split('\n')
    )
    const lacking = [...sizes].filter(([p]) => absent.has(p)).reduce((n, [, size]) => n + size, 0)
    expect(lacking).toBeGreaterThan(2_000_000)

    cache.clear()
    const sshBefore = forwarder.bytes()
    const runs = await Promise.all(['1', '2', '3'].map(shard => shardJob(text, shard)))
    const ssh = forwarder.bytes()
    for (const run of runs) {
      if (run.exitCode !== 0) console.log(run.log)
      expect(run.exitCode).toBe(0)
      // Nothing evaluated or built: no source was given, and the phases say so.
      expect(run.log).not.toMatch(/::group::(Evaluate|Build) /)
    }
    expect(new Set(runs.map(r => r.runnerTemp)).size).toBe(3)
    // Every machine once, deployed from the plan, by its shard's job.
    const results = runs.map(r => JSON.parse(r.outputs.results) as Record<string, Record<string, string>>)
    expect(results.map(r => Object.keys(r).sort())).toEqual([
      ['pf1', 'pf2'],
      ['pf3', 'pf4'],
      ['pf5', 'pf6']
    ])
    for (const r of results)
      for (const m of Object.values(r)) {
        expect(m).toMatchObject({ result: 'deployed', 'store-path': top, 'copied-bytes': '0' })
      }
    for (let i = 1; i <= FLEET; i++) {
      expect(fleetExec(i, 'readlink /run/current-system')).toBe(top)
      expect(fleetExec(i, 'readlink /run/current-system')).not.toBe(gen0)
    }
    // Each Pi fetched the NARs itself, from its own address.
    const narsBy = (client: string): CacheRequest[] =>
      cacheLog().filter(
        r => r.client === client && r.method === 'GET' && r.path.startsWith('/nar/') && r.status === 200
      )
    for (const host of hosts) expect(narsBy(host).length).toBeGreaterThan(0)
    // The runner fetched no NAR (only .narinfo files, to list the closures)...
    expect(narsBy('10.99.1.1')).toEqual([])
    const runnerFromCache = cacheLog()
      .filter(r => r.client === '10.99.1.1')
      .reduce((n, r) => n + r.bytes, 0)
    // ... and through the jump host only SSH: per Pi a small part of what a copy would carry.
    const sshPerPi = (ssh.up - sshBefore.up + ssh.down - sshBefore.down) / FLEET
    console.log(
      `shards: ${Math.round(sshPerPi / 1024)} KiB of SSH per Pi through the jump host, against ${Math.round(lacking / 1024)} KiB of NAR each Pi lacked; the runner read ${Math.round(runnerFromCache / 1024)} KiB of .narinfo from the cache (${sizes.size} paths per closure)`
    )
    expect(sshPerPi).toBeLessThan(lacking / 8)
    // The action's own SSH, bounded: 39 KiB per Pi measured here, where the fresh Pis are sent
    // this release's scripts; 29 once they keep them (bench fanout; docs/design/fleet-fanout.md).
    // Not the closure's names: sent, a thousand store paths would be 24 KB each way (147 KiB).
    expect(sshPerPi).toBeLessThan(56 * 1024)

    // The last job: every machine once, each running the plan's system; nothing changed by it.
    const report = await reportJob(text)
    if (report.exitCode !== 0) console.log(report.log)
    expect(report.exitCode).toBe(0)
    const all = JSON.parse(report.outputs.results) as Record<string, Record<string, string>>
    expect(Object.keys(all).sort()).toEqual(hosts.map((_, i) => `pf${i + 1}`).sort())
    for (const m of Object.values(all)) expect(m).toMatchObject({ result: 'deployed', 'store-path': top })
    for (const name of Object.keys(all)) expect(report.summary.split(name).length - 1).toBeGreaterThan(0)
    for (let i = 1; i <= FLEET; i++) expect(fleetExec(i, 'readlink /run/current-system')).toBe(top)
  }, 900_000)

  it('a Pi that cannot reach the cache: its closure goes through the runner, with a warning naming it; the others still fetch it', async () => {
    const { text, plan } = await buildJob('shards-b')
    const top = plan.machines[0].storePath
    fs.writeFileSync(denyFile, `${hosts[5]}\n`)
    try {
      const run = await shardJob(text, '3')
      if (run.exitCode !== 0) console.log(run.log)
      expect(run.exitCode).toBe(0)
      const results = JSON.parse(run.outputs.results) as Record<string, Record<string, string>>
      expect(results.pf5).toMatchObject({ result: 'deployed', 'copied-bytes': '0' })
      expect(results.pf6.result).toBe('deployed')
      expect(Number(results.pf6['copied-bytes'])).toBeGreaterThan(0)
      expect(run.log).toMatch(
        new RegExp(
          `::warning::.*target root@${hosts[5].replace(/\./g, '\\.')} did not fetch \\d+ of the closure's paths`
        )
      )
      expect(fleetExec(5, 'readlink /run/current-system')).toBe(top)
      expect(fleetExec(6, 'readlink /run/current-system')).toBe(top)

      // Shards 1 and 2 of this plan never ran: the last job fails and names each of their machines.
      const report = await reportJob(text)
      expect(report.exitCode).not.toBe(0)
      const all = JSON.parse(report.outputs.results) as Record<string, Record<string, string>>
      expect(Object.entries(all).map(([name, m]) => [name, m.result])).toEqual([
        ['pf1', 'failed'],
        ['pf2', 'failed'],
        ['pf3', 'failed'],
        ['pf4', 'failed'],
        ['pf5', 'deployed'],
        ['pf6', 'deployed']
      ])
      for (const i of [1, 2, 3, 4])
        expect(report.log).toMatch(
          new RegExp(
            `::error title=.*pf${i}.*target root@${hosts[i - 1].replace(/\./g, '\\.')} runs /nix/store/\\S+, not the deploy plan's`
          )
        )
    } finally {
      fs.rmSync(denyFile, { force: true })
    }
  }, 900_000)

  it('a cache that hangs for a Pi (no answer at all; or its .narinfo files and no NAR): each gives up within a bound, and its closure goes through the runner', async () => {
    const { text, plan } = await buildJob('shards-d')
    const top = plan.machines[0].storePath
    fs.writeFileSync(denyFile, `stall-nar ${hosts[4]}\nstall ${hosts[5]}\n`)
    try {
      // Nix's own bound is 300 s per download: the job would be ended here first, failing the test.
      const run = await shardJob(text, '3', {}, { timeoutMs: 240_000 })
      if (run.exitCode !== 0) console.log(run.log)
      expect(run.exitCode).toBe(0)
      const results = JSON.parse(run.outputs.results) as Record<string, Record<string, string>>
      for (const name of ['pf5', 'pf6']) {
        expect(results[name].result).toBe('deployed')
        expect(Number(results[name]['copied-bytes'])).toBeGreaterThan(0)
      }
      for (const i of [5, 6]) expect(fleetExec(i, 'readlink /run/current-system')).toBe(top)
      // Each asked the cache and got no answer: pf5 for a NAR (its survey listed the closure), pf6
      // for its survey's listing (it was then not asked to fetch from the cache at all).
      const held = (host: string) => cacheLog().filter(r => r.client === host && r.status === 0)
      expect(held(hosts[4]).length).toBeGreaterThan(0)
      expect(held(hosts[4]).every(r => r.path.startsWith('/nar/'))).toBe(true)
      expect(held(hosts[5]).length).toBeGreaterThan(0)
      expect(held(hosts[5]).some(r => r.path.startsWith('/nar/'))).toBe(false)
    } finally {
      fs.rmSync(denyFile, { force: true })
    }
  }, 900_000)

  it("shards that end three ways: the report tells each machine's from the record its shard left there, and with rollback-fleet puts the deployed ones back", async () => {
    const system = (i: number) => ({
      current: fleetExec(i, 'readlink /run/current-system'),
      profile: fleetExec(i, 'readlink /nix/var/nix/profiles/system')
    })
    const before = hosts.map((_, i) => system(i + 1))
    const { text, plan } = await buildJob('shards-c')
    const top = plan.machines[0].storePath
    // Shard 1 deploys its Pis; shard 2's health check fails on both of its Pis, which roll back.
    const one = await shardJob(text, '1')
    if (one.exitCode !== 0) console.log(one.log)
    expect(one.exitCode).toBe(0)
    const two = await shardJob(text, '2', { 'health-checks': 'false', 'health-timeout': '5' })
    expect(two.exitCode).not.toBe(0)
    expect(JSON.parse(two.outputs.results)).toMatchObject({
      pf3: { result: 'rolled-back', shard: '2' },
      pf4: { result: 'rolled-back', shard: '2' }
    })
    // Shard 3's job is cancelled (SIGINT, as a runner's cancel) while pf5 waits on a cache that
    // lists the closure and then sends it no NAR, once pf5's record says its deploy started (before
    // that wait); one at a time, pf6 is never reached.
    fs.writeFileSync(denyFile, `stall-nar ${hosts[4]}\n`)
    let job: ChildProcess | undefined
    const three = shardJob(
      text,
      '3',
      { parallel: '1' },
      { timeoutMs: 600_000, onOutput: (_, child) => (job = child) }
    )
    try {
      const deadline = Date.now() + 300_000
      for (;;) {
        const record = fleetExec(5, 'cat /nix/var/nix-deploy-action/plan-record 2>/dev/null || true')
        if (record.includes(`plan=${plan.id}\n`) && /^state=started$/m.test(record)) break
        expect(Date.now()).toBeLessThan(deadline)
        await new Promise(r => setTimeout(r, 500))
      }
    } finally {
      job?.kill('SIGINT')
      fs.rmSync(denyFile, { force: true })
    }
    expect((await three).exitCode).not.toBe(0)

    const report = await reportJob(text, { 'rollback-fleet': 'true' })
    if (report.exitCode === 0) console.log(report.log)
    expect(report.exitCode).not.toBe(0)
    const all = JSON.parse(report.outputs.results) as Record<string, Record<string, string>>
    expect(Object.entries(all).map(([name, m]) => [name, m.result, m.shard, m['shard-outcome']])).toEqual([
      ['pf1', 'rolled-back', '1', 'deployed'],
      ['pf2', 'rolled-back', '1', 'deployed'],
      ['pf3', 'failed', '2', 'rolled-back'],
      ['pf4', 'failed', '2', 'rolled-back'],
      ['pf5', 'failed', '3', 'stopped'],
      ['pf6', 'failed', '3', 'not-reached']
    ])
    // Every Pi runs and boots what it did before the plan: shard 1's two put back by the report
    // job (the generation shard 1 made gone), shard 2's by themselves, shard 3's never changed.
    for (let i = 1; i <= FLEET; i++) expect(system(i)).toEqual(before[i - 1])
    expect(before.map(b => b.current)).not.toContain(top)
    // Read again (the report job re-run): the two it put back say so, not "changed since".
    const again = await reportJob(text)
    const reread = JSON.parse(again.outputs.results) as Record<string, Record<string, string>>
    expect([reread.pf1['shard-outcome'], reread.pf2['shard-outcome']]).toEqual(['rolled-back', 'rolled-back'])
    expect(fleetExec(1, 'cat /nix/var/nix-deploy-action/plan-record')).toMatch(/^by-rollback-fleet=1$/m)
  }, 900_000)

  it("a shard's Pi that fails after activating (its deployed record cannot be written): with rollback-fleet the shard puts it back too, a failure still", async () => {
    const system = (i: number) => ({
      current: fleetExec(i, 'readlink /run/current-system'),
      profile: fleetExec(i, 'readlink /nix/var/nix/profiles/system')
    })
    const before = [system(1), system(2)]
    const { text, plan } = await buildJob('shards-d')
    const top = plan.machines[0].storePath
    expect(before.map(b => b.current)).not.toContain(top)
    // On pf2 only (the marker is in its own /nix), the health check, which passes, leaves the record
    // a mount point: renaming the deployed record over it fails (EBUSY), in the deploy's last
    // command, after the activation was confirmed: the Pi runs the new system, and its deploy failed.
    const record = '/nix/var/nix-deploy-action/plan-record'
    const marker = '/nix/var/nda-test-record-busy'
    fleetExec(2, `touch ${marker}`)
    try {
      const one = await shardJob(text, '1', {
        'rollback-fleet': 'true',
        'health-checks': `[ ! -e ${marker} ] || mountpoint -q ${record} || mount --bind ${marker} ${record}`
      })
      expect(fleetExec(2, `mountpoint -q ${record} && echo busy`)).toBe('busy')
      expect(one.exitCode).not.toBe(0)
      expect(JSON.parse(one.outputs.results)).toMatchObject({
        pf1: { result: 'rolled-back', shard: '1' },
        pf2: { result: 'rolled-back', shard: '1' }
      })
      // pf2's own failure is its error; pf1 was put back for it.
      expect(one.log).toMatch(/::error title=[^:]*pf2[^:]*activate failed::/)
      expect(one.log).not.toMatch(/::error title=[^:]*pf1/)
      expect(fleetExec(1, `cat ${record}`)).toMatch(/^by-rollback-fleet=1$/m)
    } finally {
      fleetExec(2, `umount ${record} 2>/dev/null; rm -f ${marker}`)
    }
    // Both run and boot what they did before: none of the fleet is left on the new system.
    expect([system(1), system(2)]).toEqual(before)
  }, 900_000)

  it('a shard job cancelled during its health checks: the report job waits for that deploy to end (its agent rolls back) and does not call the Pi deployed', async () => {
    const system = () => ({
      current: fleetExec(1, 'readlink /run/current-system'),
      profile: fleetExec(1, 'readlink /nix/var/nix/profiles/system')
    })
    const before = system()
    const { text, plan } = await buildJob('shards-e')
    const top = plan.machines[0].storePath
    expect(before.current).not.toBe(top)
    // pf1 alone (parallel 1); its health check takes longer than the test waits (it ends by itself).
    let job: ChildProcess | undefined
    const one = shardJob(
      text,
      '1',
      { parallel: '1', 'health-checks': 'sleep 40', 'health-timeout': '20', 'confirm-timeout': '45' },
      { timeoutMs: 600_000, onOutput: (_, child) => (job = child) }
    )
    try {
      // Cancelled once pf1 runs the new system: its agent waits for a confirmation that never comes.
      const deadline = Date.now() + 300_000
      while (fleetExec(1, 'readlink /run/current-system') !== top) {
        expect(Date.now()).toBeLessThan(deadline)
        await new Promise(r => setTimeout(r, 200))
      }
    } finally {
      job?.kill('SIGINT')
    }
    expect((await one).exitCode).not.toBe(0)

    // At once, as a workflow's `if: always()` job after a cancel: pf1 still runs the new system.
    const report = await reportJob(text)
    expect(report.exitCode).not.toBe(0)
    const all = JSON.parse(report.outputs.results) as Record<string, Record<string, string>>
    expect([all.pf1.result, all.pf1['shard-outcome']]).toEqual(['failed', 'stopped'])
    expect(all.pf2['shard-outcome']).toBe('not-reached')
    expect(system()).toEqual(before)
  }, 900_000)
})

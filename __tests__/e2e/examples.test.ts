import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { GitHubStandIn } from './github-service'
import {
  allExampleJobs,
  expressions,
  NOT_RUN,
  piKeyAs,
  RUN,
  runExample as runExampleStep
} from './examples-run'
import { ActionRun, describeE2E, fixturePath, piState, PiName, resetPi, testbed } from './harness'

/**
 * The workflows users copy (examples/) run as they are: each nix-deploy-action step's `with:` (and
 * `env:`) block is read from the file, every `${{ … }}` in it replaced from the map below, and run
 * against the testbed. What needs the internet is stood in for on the runner: `cloudflared` and
 * `tailscale` are scripts on PATH that carry the connection through the jump host's namespace, as
 * the real tunnels would from outside. Where an example names a host that exists only on the
 * internet (a public bastion), `overrides` says so and what stands in for it.
 */

describeE2E('the examples users copy run as they are against the testbed', () => {
  let bin: string
  // GitHub's API for the workflows that fetch from it (diff-against github:…), with the job's token.
  const github = new GitHubStandIn()
  const fixtureDir = (): string => path.join(testbed().TESTBED, 'fixture')
  /** Runs an example job's step in `workspace` (default the fixture flake: `.#pi3`). */
  /** An example's step, with GitHub's stand-in and the tunnels' clients (bin) in its environment. */
  const runExample = (
    name: string,
    values: Record<string, string>,
    opts: { overrides?: Record<string, string>; workspace?: string } = {}
  ): Promise<ActionRun> =>
    runExampleStep(name, values, { ...opts, env: { ...github.env(), PATH: `${bin}:${process.env.PATH}` } })
  const deployed = (pi: PiName): string => piState(pi).current
  /** The example deployed the fixture's pi3 to pi. */
  const expectPi3 = (run: ActionRun): void => {
    expect(run.exitCode).toBe(0)
    expect(run.outputs.result).toBe('deployed')
    expect(deployed('pi')).toBe(fixturePath('pi3'))
  }

  beforeAll(async () => {
    await github.start()
    fixturePath('pi3')
    // The tunnels' clients, stood in for: each checks what the real one would be given, then
    // carries stdin/stdout to the Pi's sshd from inside the jump host's namespace.
    bin = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-example-bin-'))
    const pi = testbed().TESTBED_PI
    fs.writeFileSync(
      path.join(bin, 'cloudflared'),
      `#!/bin/sh
# Stand-in for: cloudflared access ssh --hostname HOST (service token from the environment)
[ "$1 $2 $3" = "access ssh --hostname" ] || { echo "cloudflared stand-in: unexpected arguments: $*" >&2; exit 2; }
[ -n "$TUNNEL_SERVICE_TOKEN_ID" ] && [ -n "$TUNNEL_SERVICE_TOKEN_SECRET" ] || { echo "cloudflared stand-in: no service token in the environment" >&2; exit 3; }
[ "$4" = pi-ssh.example.org ] || { echo "cloudflared stand-in: no tunnel for $4" >&2; exit 4; }
exec ip netns exec nda-jump socat - TCP:${pi}:22
`,
      { mode: 0o755 }
    )
    fs.writeFileSync(
      path.join(bin, 'tailscale'),
      `#!/bin/sh
# Stand-in for: tailscale nc HOST PORT
[ "$1" = nc ] || { echo "tailscale stand-in: unexpected arguments: $*" >&2; exit 2; }
[ "$2" = pi3 ] || { echo "tailscale stand-in: no peer $2 on the tailnet" >&2; exit 4; }
exec ip netns exec nda-jump socat - TCP:${pi}:"$3"
`,
      { mode: 0o755 }
    )
  }, 300_000)
  afterAll(async () => {
    await github.stop()
    fs.rmSync(bin, { recursive: true, force: true })
  }, 120_000)

  it('every example job with a nix-deploy-action step is run here (or in examples-spi.test.ts), or says why not', () => {
    expect(allExampleJobs()).toEqual([...RUN, ...Object.keys(NOT_RUN)].sort())
  })

  it('pr-dry-run.yml (build job): the diff against the base branch, fetched from GitHub (stand-in) with the job’s token', async () => {
    const t = testbed()
    // Nix caches what it fetched by URL: a repository name of this run's own.
    const repo = `nda/examples-${github.sha.slice(0, 8)}`
    const run = await runExample('pr-dry-run.yml#build', {
      ...expressions(t, github),
      'github.repository': repo,
      'github.base_ref': `main?host=${t.TESTBED_GITHUB_HOST}`
    })
    expect(run.exitCode).toBe(0)
    expect(run.outputs.result).toBe('built')
    expect(run.summary).toMatch(new RegExp(`#### Changes against .*${repo}`))
    const fetched = github.requests().filter(r => r.url.startsWith(`/repos/${repo}/`))
    expect(fetched.length).toBeGreaterThan(0)
    expect(fetched.every(r => r.authorized)).toBe(true)
  }, 300_000)

  it('deploy-github-hosted.yml through the jump host', async () => {
    resetPi()
    const t = testbed()
    const run = await runExample('deploy-github-hosted.yml#deploy', expressions(t, github), {
      // The example's addresses are a home LAN and a public bastion: the testbed's Pi and jump host.
      overrides: { 'target-host': t.TESTBED_PI, 'jump-host': `root@${t.TESTBED_JUMP}` }
    })
    expectPi3(run)
  }, 300_000)

  // The Pi's host key pinned under the name the tunnel's host goes by (as the example says to).
  it.each([
    [
      'deploy-cloudflare-tunnel.yml',
      'the cloudflared stand-in (service token from the step env)',
      'pi-ssh.example.org'
    ],
    ['deploy-tailscale.yml', 'the tailscale stand-in', 'pi3']
  ])(
    '%s through %s',
    async (file, _how, hostName) => {
      resetPi()
      expectPi3(await runExample(`${file}#deploy`, expressions(testbed(), github, [piKeyAs(hostName)])))
    },
    300_000
  )

  it('nixops-network.yml: rpi.nix and ./nixpkgs from the workspace, every machine', async () => {
    resetPi()
    resetPi('pi2')
    const t = testbed()
    // The workspace: a repository holding rpi.nix (and what it imports) and ./nixpkgs (the
    // example's submodule; here the fixture's nixpkgs stand-in, next to the lib.nix it uses).
    const workspace = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-example-network-'))
    fs.cpSync(fixtureDir(), workspace, { recursive: true })
    fs.cpSync(path.join(fixtureDir(), 'network'), workspace, { recursive: true })
    const run = await runExample('nixops-network.yml#deploy', expressions(t, github), {
      // The example runs on a self-hosted runner on the Pis' LAN; here they are behind the jump host.
      overrides: { 'jump-host': t.TESTBED_JUMP },
      workspace
    }).finally(() => fs.rmSync(workspace, { recursive: true, force: true }))
    expect(run.exitCode).toBe(0)
    const results = JSON.parse(run.outputs.results) as Record<string, { result: string }>
    expect(Object.fromEntries(Object.entries(results).map(([m, r]) => [m, r.result]))).toEqual({
      pi3: 'deployed',
      pi3b: 'deployed'
    })
  }, 300_000)

  it('pr-dry-run.yml (dry-activate job) straight over the LAN: dry-activated, the Pi unchanged', async () => {
    resetPi()
    const t = testbed()
    const before = piState('pi')
    const run = await runExample('pr-dry-run.yml#dry-activate', {
      ...expressions(t, github),
      'vars.PI_HOST': t.TESTBED_PI_DIRECT
    })
    expect(run.exitCode).toBe(0)
    expect(run.outputs.result).toBe('dry-activated')
    expect(piState('pi')).toEqual(before)
  }, 300_000)
})

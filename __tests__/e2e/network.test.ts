import * as path from 'path'
import { deployInputs, describeE2E, onPi, piState, resetPi, runAction, testbed } from './harness'

/**
 * The seed's setup, unchanged: a classic configuration.nix with nixpkgs (here the fixture's
 * stand-in, which has the entry points real nixpkgs has), and NixOps network files with two Pis
 * behind one jump host, deployed in one step.
 */
describeE2E('classic configuration.nix and NixOps network files', () => {
  const fixture = (...p: string[]): string => path.join(testbed().TESTBED, 'fixture', ...p)
  const legacyInputs = (extra: Record<string, string>): Record<string, string> => {
    const { flake: _flake, ...rest } = deployInputs('unused')
    // Each machine's host comes from the network file (target-host is for configuration.nix).
    return {
      ...rest,
      'target-host': extra.configuration ? rest['target-host'] : '',
      nixpkgs: fixture('nixpkgs'),
      ...extra
    }
  }
  // Both Pis as installed before every test: none depends on what an earlier one deployed.
  beforeEach(() => {
    resetPi('pi')
    resetPi('pi2')
  }, 60_000)

  it('configuration + nixpkgs: evaluated like nixos-rebuild (<nixpkgs/nixos>), deployed to target-host', async () => {
    const run = await runAction(legacyInputs({ configuration: fixture('etc-nixos', 'configuration.nix') }))
    expect(run.exitCode).toBe(0)
    expect(run.outputs.result).toBe('deployed')
    expect(run.outputs['store-path']).toMatch(/-nixos-system-pi3-pi3-classic$/)
    expect(onPi('readlink /run/current-system')).toBe(run.outputs['store-path'])
    // Its imports (pi-configuration.nix, hardware-configuration.nix) and their definitions count.
    expect(onPi('cat /run/current-system/etc/motd')).toBe('Welcome to pi3-classic')
    expect(onPi('/run/current-system/sw/bin/pi-tools')).toBe('pi-tools 1.0')
  }, 300_000)

  it("the seed's network file with a second one: two Pis deployed in parallel, keys uploaded, per-machine results", async () => {
    const run = await runAction(
      legacyInputs({
        network: `${fixture('network', 'rpi.nix')}\n${fixture('network', 'lan.nix')}`,
        'target-host': ''
      })
    )
    if (run.exitCode !== 0) console.log(run.log)
    expect(run.exitCode).toBe(0)
    const results = JSON.parse(run.outputs.results)
    expect(Object.keys(results).sort()).toEqual(['pi3', 'pi3b'])
    // Both as installed (generation 1): each gets generation 2.
    expect(results.pi3).toMatchObject({ host: 'root@10.99.2.2', result: 'deployed', generation: '2' })
    expect(results.pi3b).toMatchObject({ host: 'root@10.99.4.2', result: 'deployed', generation: '2' })
    expect(run.outputs.result).toBe('deployed')
    // Each Pi runs its own machine's system; defaults (lan.nix, mkForce) apply to both.
    expect(onPi('readlink /run/current-system')).toBe(results.pi3['store-path'])
    // As in NixOps, the machine's name is its host name (over the configuration's lib.mkDefault).
    expect(results.pi3['store-path']).toMatch(/-nixos-system-pi3-pi3$/)
    expect(results.pi3b['store-path']).toMatch(/-nixos-system-pi3-pi3b$/)
    expect(onPi('readlink /run/current-system', 'pi2')).toBe(results.pi3b['store-path'])
    expect(onPi('cat /run/current-system/etc/motd')).toBe('managed by nix-deploy-action')
    expect(onPi('cat /run/current-system/etc/motd', 'pi2')).toBe('managed by nix-deploy-action')
    expect(onPi('ls /run/current-system/sw/bin | sort | tr "\\n" " "', 'pi2')).toBe('hello htop pi-tools')
    // deployment.keys: outside the store, with its owner and mode; never in the log.
    expect(onPi('stat -c "%U:%G %a" /run/keys/wifi-psk; cat /run/keys/wifi-psk')).toBe(
      'root:root 640\ncorrect-horse-wifi-secret-4711'
    )
    expect(onPi('grep -rl correct-horse-wifi /nix/store 2>/dev/null | wc -l')).toBe('0')
    const printed = run.log.split('\n').filter(l => !l.startsWith('::add-mask::'))
    expect(printed.join('\n')).not.toContain('correct-horse-wifi-secret-4711')
    expect(run.log).toContain('::add-mask::correct-horse-wifi-secret-4711')
    expect(onPi('ls /run/keys 2>/dev/null | wc -l', 'pi2')).toBe('0')
    // In parallel: both deploys started before either finished.
    const at = (line: string): number => run.log.indexOf(line)
    expect(at('[pi3b] deploying to')).toBeGreaterThan(0)
    expect(at('[pi3b] deploying to')).toBeLessThan(at('[pi3] deployed'))
    expect(at('[pi3] deploying to')).toBeLessThan(at('[pi3b] deployed'))
    // Several machines print at once: no log groups while they deploy, every line names its machine.
    const deployPart = run.log.slice(at('[pi3'))
    expect(deployPart).not.toMatch(/^::group::/m)
    expect(deployPart).toContain('[pi3] Uploaded key wifi-psk to /run/keys/wifi-psk')
    // Built together in one Nix invocation; the summary has a row per machine.
    expect(run.log.match(/::group::Build 2 systems \(pi3, pi3b\)/g)).toHaveLength(1)
    expect(run.summary.split('\n')[0]).toBe('### nix-deploy-action: ✅ Deployed (2 machines)')
    expect(run.summary).toMatch(/\| pi3 \| <code>root@10\.99\.2\.2<\/code> \| switch \| deployed \|/)
    expect(run.summary).toMatch(/\| pi3b \| <code>root@10\.99\.4\.2<\/code> \| switch \| deployed \|/)
  }, 300_000)

  it('machines selects by name or glob; a single machine takes target-host from the inputs', async () => {
    const pi2Only = await runAction(
      legacyInputs({ network: fixture('network', 'rpi.nix'), machines: 'pi3?', 'target-host': '' })
    )
    expect(pi2Only.exitCode).toBe(0)
    expect(Object.keys(JSON.parse(pi2Only.outputs.results))).toEqual(['pi3b'])
    // A new generation on pi2 only: pi (pi3, not selected) keeps its one generation.
    expect(pi2Only.outputs).toMatchObject({ result: 'deployed', generation: '2' })
    expect(onPi('ls /nix/var/nix/profiles | grep -c "^system-"')).toBe('1')

    // The file says 10.99.2.2 for pi3; the input overrides it when one machine is deployed.
    const direct = await runAction(
      legacyInputs({
        network: fixture('network', 'rpi.nix'),
        machines: 'pi3',
        'target-host': testbed().TESTBED_PI_DIRECT,
        'jump-host': ''
      })
    )
    expect(direct.exitCode).toBe(0)
    expect(direct.summary).toContain(`| Host | <code>root@${testbed().TESTBED_PI_DIRECT}</code> |`)

    // target-user alone overrides the file's user (root) for the one machine; with two, it is refused.
    const asUser = await runAction(
      legacyInputs({ network: fixture('network', 'rpi.nix'), machines: 'pi3b', 'target-user': 'nda-deploy' })
    )
    expect(asUser.exitCode).toBe(0)
    expect(asUser.summary).toContain('| Host | <code>nda-deploy@10.99.4.2</code> |')
    const both = await runAction(
      legacyInputs({ network: fixture('network', 'rpi.nix'), 'target-user': 'nda-deploy' })
    )
    expect(both.exitCode).toBe(1)
    expect(both.log).toContain('target-user is set, but the network has 2 machines selected (pi3, pi3b)')

    const typo = await runAction(legacyInputs({ network: fixture('network', 'rpi.nix'), machines: 'pi4' }))
    expect(typo.exitCode).toBe(1)
    expect(typo.log).toMatch(
      /::error title=nix-deploy-action%3A inputs failed::machines: "pi4" matches no machine of the network%0AThe network defines: pi3, pi3b\./
    )
  }, 300_000)

  it('machines selects by @tag (deployment.tags); a tag no machine has is refused, naming the tags', async () => {
    const network = `${fixture('network', 'rpi.nix')}\n${fixture('network', 'tags.nix')}`
    const edge = await runAction(legacyInputs({ network, machines: '@edge' }))
    expect(edge.exitCode).toBe(0)
    expect(Object.keys(JSON.parse(edge.outputs.results))).toEqual(['pi3b'])
    expect(edge.summary).toContain('| Tags | @edge @kitchen |')
    expect(onPi('ls /nix/var/nix/profiles | grep -c "^system-"')).toBe('1')

    const nope = await runAction(legacyInputs({ network, machines: '@garage' }))
    expect(nope.exitCode).toBe(1)
    expect(nope.summary).toContain('machines: &#34;@garage&#34; matches no machine of the network')
    expect(nope.summary).toContain('Tags (deployment.tags): @edge, @kitchen, @rack.')
  }, 300_000)

  it('rollout canary: the canary fails its health check and is rolled back; the other machine is not touched', async () => {
    const pi2Before = piState('pi2')
    const run = await runAction(
      legacyInputs({
        network: fixture('network', 'rpi.nix'),
        rollout: 'canary',
        // Fails on pi (pi3, the first machine: the canary) only.
        'health-checks': '! ip -br addr | grep -q "10[.]99[.]2[.]2/"',
        'health-timeout': '5'
      })
    )
    expect(run.exitCode).toBe(1)
    const results = JSON.parse(run.outputs.results) as Record<string, { result: string }>
    expect(results.pi3.result).toBe('rolled-back')
    expect(results.pi3b.result).toBe('skipped')
    expect(piState('pi2')).toEqual(pi2Before)
    expect(run.summary).toContain('not deployed: the canary failed (pi3; rollout: canary)')
  }, 300_000)

  it('rollback-fleet: the last batch fails its health check, so the machine deployed before it is put back as it was', async () => {
    const before = { pi: piState('pi'), pi2: piState('pi2') }
    const run = await runAction(
      legacyInputs({
        network: fixture('network', 'rpi.nix'),
        rollout: '1',
        'rollback-fleet': 'true',
        // Pruning waits for the fleet: had pi3's deploy pruned at once, its previous generation
        // would be gone and going back would make a new one (its generations would differ).
        'keep-generations': '1',
        // Fails on pi2 (pi3b, the second batch) only.
        'health-checks': '! ip -br addr | grep -q "10[.]99[.]4[.]2/"',
        'health-timeout': '5'
      })
    )
    expect(run.exitCode).toBe(1)
    const results = JSON.parse(run.outputs.results) as Record<string, { result: string }>
    expect(results.pi3.result).toBe('rolled-back')
    expect(results.pi3b.result).toBe('rolled-back')
    // Each runs and boots what it ran before, its profile and generations as they were.
    expect(piState('pi')).toEqual(before.pi)
    expect(piState('pi2')).toEqual(before.pi2)
    expect(run.summary.split('\n')[0]).toBe(
      '### nix-deploy-action: ⚠️ Rolled back: the new system failed and the target is back on its previous system (1 of 2 machines; 1 rolled back by rollback-fleet)'
    )
    expect(run.summary).toContain(
      `**pi3 rolled back (rollback-fleet):** back on <code>${before.pi.current}</code>: another machine of the fleet failed (pi3b)`
    )
    expect(run.log).toContain('::warning title=nix-deploy-action%3A pi3%3A rolled back::')
  }, 300_000)

  it('rollback-fleet when every machine succeeds: nothing rolled back; keep-generations prunes after the fleet', async () => {
    const first = await runAction(legacyInputs({ network: fixture('network', 'rpi.nix') }))
    expect(first.exitCode).toBe(0)
    const run = await runAction(
      legacyInputs({
        network: `${fixture('network', 'rpi.nix')}\n${fixture('network', 'lan.nix')}`,
        'rollback-fleet': 'true',
        'keep-generations': '1'
      })
    )
    expect(run.exitCode).toBe(0)
    const results = JSON.parse(run.outputs.results) as Record<string, { result: string; generation: string }>
    expect(results.pi3).toMatchObject({ result: 'deployed', generation: '3' })
    expect(results.pi3b).toMatchObject({ result: 'deployed', generation: '3' })
    // Generation 2 (the first run's) pruned once both had a result; 1 stays: it is what booted.
    expect(piState('pi').generations).toEqual(['system-1-link', 'system-3-link'])
    expect(piState('pi2').generations).toEqual(['system-1-link', 'system-3-link'])
    expect(run.summary).toContain('| Old generations deleted | 2 |')
  }, 300_000)

  it('one machine failing does not stop the other; the step fails and results say which', async () => {
    const run = await runAction(
      legacyInputs({
        network: `${fixture('network', 'rpi.nix')} ${fixture('network', 'ghost.nix')}`,
        'target-host': '',
        'connect-timeout': '5'
      })
    )
    expect(run.exitCode).toBe(1)
    const results = JSON.parse(run.outputs.results)
    expect(results.ghost.result).toBe('failed')
    expect(['deployed', 'unchanged']).toContain(results.pi3.result)
    expect(['deployed', 'unchanged']).toContain(results.pi3b.result)
    expect(run.outputs.result).toBe('failed')
    expect(run.log).toMatch(/::error title=nix-deploy-action%3A ghost%3A connect failed::ghost: /)
    expect(run.summary.split('\n')[0]).toBe('### nix-deploy-action: ❌ Failed (1 of 3 machines)')

    // fail-fast with one at a time: after the first failure, the rest is skipped.
    const fast = await runAction(
      legacyInputs({
        network: `${fixture('network', 'ghost.nix')} ${fixture('network', 'rpi.nix')}`,
        'target-host': '',
        'connect-timeout': '5',
        parallel: '1',
        'fail-fast': 'true'
      })
    )
    expect(fast.exitCode).toBe(1)
    const fastResults = JSON.parse(fast.outputs.results)
    expect(fastResults.ghost.result).toBe('failed')
    expect(fastResults.pi3.result).toBe('skipped')
    expect(fastResults.pi3b.result).toBe('skipped')
  }, 300_000)

  it('NixOps-only options warn; resources and unknown options fail clearly, before anything is built', async () => {
    const cloud = await runAction(
      legacyInputs({
        network: `${fixture('network', 'rpi.nix')} ${fixture('network', 'cloud.nix')}`,
        mode: 'build'
      })
    )
    if (cloud.exitCode !== 0) console.log(cloud.log)
    expect(cloud.exitCode).toBe(0)
    expect(cloud.log).toContain('::warning::pi3: deployment.ec2 is ignored')
    const resources = await runAction(
      legacyInputs({ network: `${fixture('network', 'rpi.nix')} ${fixture('network', 'resources.nix')}` })
    )
    expect(resources.exitCode).toBe(1)
    expect(resources.log).toMatch(
      /::error title=nix-deploy-action%3A inputs failed::.*resources\.nix declare resources/
    )
  }, 300_000)
})

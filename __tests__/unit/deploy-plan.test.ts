import { deployPlanProblems, planShards, PlannedMachine, shardMachines } from '../../src/nix/deploy-plan'

const machine = (n: number): PlannedMachine => ({
  name: `pi${n}`,
  storePath: `/nix/store/${String(n).padStart(32, 'a')}-nixos-system-pi${n}`,
  system: 'aarch64-linux',
  host: `10.0.0.${n}`,
  port: 22,
  user: 'root',
  tags: []
})
const fleet = (n: number): PlannedMachine[] => Array.from({ length: n }, (_, i) => machine(i + 1))
const cache = { uri: 's3://pis?region=eu-west-1', publicKey: 'pis-1:AAAA' }
const PLAN_ID = '0123456789abcdef'

describe('planShards: the fleet split into jobs', () => {
  it('splits in order into shards whose sizes differ by at most one; every machine once', () => {
    const plan = planShards(fleet(10), 3, { kind: 'all' }, cache, PLAN_ID)
    expect(plan.shards.map(s => s.machines)).toEqual([
      ['pi1', 'pi2', 'pi3', 'pi4'],
      ['pi5', 'pi6', 'pi7'],
      ['pi8', 'pi9', 'pi10']
    ])
    expect(plan.matrix).toEqual({ shard: ['1', '2', '3'] })
  })
  it('never makes an empty shard: more shards asked than machines gives one machine each', () => {
    expect(planShards(fleet(2), 5, { kind: 'all' }, cache, PLAN_ID).shards.map(s => s.machines)).toEqual([
      ['pi1'],
      ['pi2']
    ])
    expect(planShards([], 3, { kind: 'all' }, cache, PLAN_ID).shards).toEqual([])
  })
  it('puts the canary in a shard of its own, outside the matrix (its job runs first)', () => {
    const plan = planShards(fleet(5), 2, { kind: 'canary' }, cache, PLAN_ID)
    expect(plan.shards[0]).toEqual({ id: 'canary', machines: ['pi1'] })
    expect(plan.shards.slice(1).map(s => s.machines)).toEqual([
      ['pi2', 'pi3'],
      ['pi4', 'pi5']
    ])
    expect(plan.matrix.shard).toEqual(['1', '2'])
  })
  it('reads back what it wrote, and refuses what is not a plan of its version', () => {
    const text = JSON.stringify(planShards(fleet(3), 2, { kind: 'all' }, cache, PLAN_ID))
    expect(deployPlanProblems(text)).toEqual({ plan: JSON.parse(text), problems: [] })
    expect(deployPlanProblems('{').problems[0]).toMatch(/^deploy-plan is not JSON/)
    expect(deployPlanProblems('{"version":2}').problems).toContain(
      'deploy-plan is not a plan of this version (version 1)'
    )
    // A plan made before plans had an id: its shards' records could not be told from another's.
    const { id: _id, ...withoutId } = JSON.parse(text) as Record<string, unknown>
    expect(deployPlanProblems(JSON.stringify(withoutId)).problems).toEqual([
      "deploy-plan has no id (16 hex digits): make it again with this action's build job"
    ])
    const forged = { ...JSON.parse(text), shards: [{ id: '1', machines: ['pi9'] }] }
    expect(deployPlanProblems(JSON.stringify(forged)).problems).toEqual([
      'deploy-plan: shard 1 names "pi9", which it does not plan'
    ])
  })
})

describe('a shard job reading the plan', () => {
  const text = JSON.stringify(planShards(fleet(5), 2, { kind: 'canary' }, cache, PLAN_ID))
  const plan = deployPlanProblems(text).plan!
  it('takes the machines of its shard, in the plan order; every machine without a shard', () => {
    expect((shardMachines(plan, 'canary') as PlannedMachine[]).map(m => m.name)).toEqual(['pi1'])
    expect((shardMachines(plan, '2') as PlannedMachine[]).map(m => m.name)).toEqual(['pi4', 'pi5'])
    expect((shardMachines(plan, '') as PlannedMachine[]).map(m => m.name)).toEqual([
      'pi1',
      'pi2',
      'pi3',
      'pi4',
      'pi5'
    ])
    expect(shardMachines(plan, '7')).toBe(
      'shard "7" is not a shard of deploy-plan (its shards: canary, 1, 2)'
    )
  })
  it('refuses a machine it could not deploy as planned, and a cache it could not name', () => {
    const doc = JSON.parse(text)
    const withMachine = (m: Record<string, unknown>): string[] =>
      deployPlanProblems(
        JSON.stringify({ ...doc, machines: [{ ...doc.machines[0], ...m }, ...doc.machines.slice(1)] })
      ).problems
    expect(withMachine({ storePath: '/etc/passwd' })).toEqual([
      'deploy-plan: machine "pi1" has no store path'
    ])
    expect(withMachine({ host: 'pi; rm -rf /' })).toEqual([
      'deploy-plan: machine "pi1" has no host to deploy to'
    ])
    expect(withMachine({ user: '-oProxyCommand=x' })).toEqual([
      'deploy-plan: machine "pi1" has no valid user'
    ])
    expect(withMachine({ port: 0 })).toEqual(['deploy-plan: machine "pi1" has no port (1-65535)'])
    expect(withMachine({ system: 'aarch64 linux' })).toEqual([
      'deploy-plan: machine "pi1" has no platform (system)'
    ])
    expect(withMachine({ name: '../pi' })).toContain(
      'deploy-plan: a machine\'s name "../pi" is not a machine name'
    )
    expect(withMachine({ name: 'pi2' })).toContain('deploy-plan names a machine twice')
    // Two machines at one target: each shard would replace the other's system there.
    expect(withMachine({ host: '10.0.0.2' })).toEqual([
      "deploy-plan: pi1 and pi2 are the same target (10.0.0.2:22): each would replace the other's system"
    ])
    expect(withMachine({ host: '10.0.0.2', port: 2222 })).toEqual([])
    expect(withMachine({ host: 7 })).toEqual(['deploy-plan: machine "pi1" has no host to deploy to'])
    expect(withMachine({ tags: 'edge' })).toEqual(['deploy-plan: machine "pi1" has no list of tags'])
    expect(withMachine({ boot: { kernel: 1 } })).toEqual([
      'deploy-plan: machine "pi1" has boot facts that are not'
    ])
    expect(withMachine({ deployUser: { enabled: 'yes', healthChecks: [] } })).toEqual([
      'deploy-plan: machine "pi1"\'s deployUser has no enabled (true or false)'
    ])
    expect(withMachine({ deployUser: { enabled: true, healthChecks: ['a\nb'] } })).toEqual([
      'deploy-plan: machine "pi1"\'s deployUser has no list of health checks (one line each)'
    ])
    expect(
      withMachine({ deployUser: { enabled: true, healthChecks: ['systemctl is-active nginx'] } })
    ).toEqual([])
    expect(deployPlanProblems(JSON.stringify({ ...doc, machines: [null] })).problems).toEqual([
      'deploy-plan: a machine is not an object'
    ])
    expect(
      deployPlanProblems(JSON.stringify({ ...doc, shards: [{ id: 1, machines: 'pi1' }] })).problems
    ).toEqual(['deploy-plan has a shard without an id or a list of machines'])
    expect(
      deployPlanProblems(
        JSON.stringify({ ...doc, cache: { uri: 'file:///c --option x', publicKey: 'k:AA==' } })
      ).problems
    ).toEqual(['deploy-plan has no binary cache URI (cache.uri, as publish-to took it)'])
    expect(
      deployPlanProblems(JSON.stringify({ ...doc, cache: { uri: 'file:///c', publicKey: 'no key' } }))
        .problems
    ).toEqual(['deploy-plan has no public key of its cache (cache.publicKey, NAME:base64)'])
  })
})

describe('deploy-plan among the inputs', () => {
  const { inputs, base } = require('./read-inputs') as typeof import('./read-inputs')
  const planText = JSON.stringify(planShards(fleet(4), 2, { kind: 'all' }, cache, PLAN_ID))
  const { flake: _flake, 'target-host': _host, ...connection } = base
  const shardJob = { ...connection, 'deploy-plan': planText, shard: '2' }
  it("is a source of its own: the shard, no evaluation; the targets are the plan's", () => {
    const source = inputs(shardJob).source
    expect(source).toMatchObject({ kind: 'plan', shard: '2', label: 'deploy-plan shard 2 (2 machines)' })
  })
  it('goes with nothing that evaluates, builds or names a target, and with a shard it has', () => {
    expect(() => inputs({ ...shardJob, flake: '.#pi3' })).toThrow(
      /set only one of flake, configuration, network, deploy-plan/
    )
    expect(() => inputs({ ...shardJob, 'target-host': '10.0.0.9' })).toThrow(
      /target-host is not used with deploy-plan/
    )
    expect(() => inputs({ ...shardJob, mode: 'build' })).toThrow(/mode build with deploy-plan/)
    expect(() => inputs({ ...shardJob, shard: '3' })).toThrow(/shard "3" is not a shard of deploy-plan/)
    expect(() => inputs({ ...shardJob, 'deploy-plan': '{' })).toThrow(/deploy-plan is not JSON/)
    expect(() => inputs({ ...base, shard: '1' })).toThrow(/shard is only used with deploy-plan/)
    expect(() => inputs({ ...shardJob, 'ssh-private-key': '' })).toThrow(/ssh-private-key is required/)
  })
  it('mode report: for a deploy plan only, as a deploy connects', () => {
    expect(inputs({ ...connection, 'deploy-plan': planText, mode: 'report' }).source).toMatchObject({
      kind: 'plan',
      shard: ''
    })
    expect(() => inputs({ ...base, mode: 'report' })).toThrow(
      /mode report reads what the machines of a deploy plan run/
    )
    expect(() => inputs({ 'deploy-plan': planText, mode: 'report' })).toThrow(/ssh-private-key is required/)
  })
  it('mode report after a build job that failed (its plan empty): says so, not to give flake or target-host', () => {
    let message = ''
    try {
      inputs({ ...connection, 'deploy-plan': '', mode: 'report' })
    } catch (e) {
      message = (e as Error).message
    }
    expect(message).toMatch(/mode report needs deploy-plan .* and it is empty: the build job failed/)
    expect(message).not.toMatch(/flake is required|target-host is required/)
  })
  it('names the commit the build job built, when it ran in GitHub Actions', () => {
    const sha = '0123456789abcdef0123456789abcdef01234567'
    const withCommit = JSON.stringify(planShards(fleet(4), 2, { kind: 'all' }, cache, PLAN_ID, sha))
    expect(inputs({ ...connection, 'deploy-plan': withCommit, shard: '1' }).source.label).toBe(
      'deploy-plan shard 1 (2 machines, commit 0123456789ab)'
    )
    const forged = { ...JSON.parse(withCommit), commit: '$(reboot)' }
    expect(deployPlanProblems(JSON.stringify(forged)).problems).toEqual([
      'deploy-plan: its commit is not a commit id'
    ])
  })
})

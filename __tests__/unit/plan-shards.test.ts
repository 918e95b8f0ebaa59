import { deployPlanProblems, planShards, PlannedMachine } from '../../src/plan-shards'

const machine = (n: number): PlannedMachine => ({
  name: `pi${n}`,
  storePath: `/nix/store/${String(n).padStart(32, 'a')}-nixos-system-pi${n}`,
  host: `10.0.0.${n}`,
  port: 22,
  user: 'root',
  tags: []
})
const fleet = (n: number): PlannedMachine[] => Array.from({ length: n }, (_, i) => machine(i + 1))
const cache = { uri: 's3://pis?region=eu-west-1', publicKey: 'pis-1:AAAA' }

describe('planShards: the fleet split into jobs', () => {
  it('splits in order into shards whose sizes differ by at most one; every machine once', () => {
    const plan = planShards(fleet(10), 3, { kind: 'all' }, cache)
    expect(plan.shards.map(s => s.machines)).toEqual([
      ['pi1', 'pi2', 'pi3', 'pi4'],
      ['pi5', 'pi6', 'pi7'],
      ['pi8', 'pi9', 'pi10']
    ])
    expect(plan.matrix).toEqual({ shard: ['1', '2', '3'] })
  })
  it('never makes an empty shard: more shards asked than machines gives one machine each', () => {
    expect(planShards(fleet(2), 5, { kind: 'all' }, cache).shards.map(s => s.machines)).toEqual([
      ['pi1'],
      ['pi2']
    ])
    expect(planShards([], 3, { kind: 'all' }, cache).shards).toEqual([])
  })
  it('puts the canary in a shard of its own, outside the matrix (its job runs first)', () => {
    const plan = planShards(fleet(5), 2, { kind: 'canary' }, cache)
    expect(plan.shards[0]).toEqual({ id: 'canary', machines: ['pi1'] })
    expect(plan.shards.slice(1).map(s => s.machines)).toEqual([
      ['pi2', 'pi3'],
      ['pi4', 'pi5']
    ])
    expect(plan.matrix.shard).toEqual(['1', '2'])
  })
  it('reads back what it wrote, and refuses what is not a plan of its version', () => {
    const text = JSON.stringify(planShards(fleet(3), 2, { kind: 'all' }, cache))
    expect(deployPlanProblems(text)).toEqual({ plan: JSON.parse(text), problems: [] })
    expect(deployPlanProblems('{').problems[0]).toMatch(/^deploy-plan is not JSON/)
    expect(deployPlanProblems('{"version":2}').problems).toContain(
      'deploy-plan is not a plan of this version (version 1)'
    )
    const forged = { ...JSON.parse(text), shards: [{ id: '1', machines: ['pi9'] }] }
    expect(deployPlanProblems(JSON.stringify(forged)).problems).toEqual([
      'deploy-plan: shard 1 names "pi9", which it does not plan'
    ])
  })
})

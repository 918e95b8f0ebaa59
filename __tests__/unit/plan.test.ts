import { sshKeyPair } from './ssh-keys'
import { ActionError } from '../../src/errors'
import { DeployPlan, deployJob, makePlan, MachinePlan } from '../../src/plan'
import { base, inputs, key } from './read-inputs'

const key2 = sshKeyPair('ed25519')

/** The plan as a deploy plan; fails the test when it is a build plan. */
function deployPlan(plan: MachinePlan): DeployPlan {
  if (plan.mode === 'build' || plan.mode === 'report')
    throw new Error(`expected a deploy plan, got a ${plan.mode} plan`)
  return plan
}

describe('makePlan', () => {
  it('lets dry-activate run with no secrets (fork PRs) and plans a build with a warning', () => {
    const plan = makePlan(inputs({ flake: '.#pi3', mode: 'dry-activate', 'target-host': 'pi' }))
    expect(plan.mode).toBe('build')
    expect(plan.requestedMode).toBe('dry-activate')
    expect(plan.warnings[0]).toMatch(
      /^dry-activate ran as a build only: ssh-private-key, known-hosts are empty/
    )
    // A fork gets no configuration variables either: the host may be empty too.
    const noVars = makePlan(inputs({ flake: '.#pi3', mode: 'dry-activate' }))
    expect(noVars.mode).toBe('build')
    expect(noVars.warnings[0]).toMatch(
      /^dry-activate ran as a build only: target-host, ssh-private-key, known-hosts are empty/
    )
  })
  it('gives a build plan no target, even when the connection inputs are set', () => {
    const plan = makePlan(inputs({ ...base, mode: 'build', 'jump-host': 'bastion' }))
    expect(plan).toEqual({ requestedMode: 'build', mode: 'build', warnings: [] })
  })
  it('plans defaults: root@host:22, the jump user from the target user, the jump key from the target key', () => {
    const plan = deployPlan(
      makePlan(inputs({ ...base, 'target-user': 'admin', 'target-port': '2222', 'jump-host': 'bastion' }))
    )
    expect(plan.target).toMatchObject({
      host: '192.168.1.20',
      port: 2222,
      user: 'admin',
      label: 'target admin@192.168.1.20:2222'
    })
    expect(plan.jumps).toEqual([
      expect.objectContaining({ host: 'bastion', port: 22, user: 'admin', label: 'jump host admin@bastion' })
    ])
    expect(plan.jumps[0].key).toBe(plan.target.key)
    expect(deployPlan(makePlan(inputs(base))).target).toMatchObject({ user: 'root', port: 22 })
    expect(deployPlan(makePlan(inputs(base))).jumps).toEqual([])
  })
  it('plans a chain of jump hosts: each hop its own user, numbered labels, keys shared or per hop', () => {
    const chain = 'bastion, ops@[fd00::7]:2200\ninner.lan'
    const shared = deployPlan(
      makePlan(inputs({ ...base, 'jump-host': chain, 'jump-host-key': key2.private }))
    )
    expect(shared.jumps.map(j => [j.user, j.host, j.port, j.label])).toEqual([
      ['root', 'bastion', 22, 'jump host 1 of 3 root@bastion'],
      ['ops', 'fd00::7', 2200, 'jump host 2 of 3 ops@[fd00::7]:2200'],
      ['root', 'inner.lan', 22, 'jump host 3 of 3 root@inner.lan']
    ])
    // One jump-host-key: every hop's; the target keeps ssh-private-key.
    expect(shared.jumps.map(j => j.key.text)).toEqual([key2.private, key2.private, key2.private])
    expect(shared.target.key.text).toBe(key.private)
    // As many keys as hops: one each, in order.
    const perHop = deployPlan(
      makePlan(inputs({ ...base, 'jump-host': 'a, b', 'jump-host-key': `${key2.private}\n${key.private}\n` }))
    )
    expect(perHop.jumps.map(j => j.key.text)).toEqual([key2.private.trim(), key.private.trim()])
    // None: every hop takes the deploy key.
    const none = deployPlan(makePlan(inputs({ ...base, 'jump-host': 'a,b' })))
    expect(none.jumps.map(j => j.key.text)).toEqual([key.private, key.private])
  })
  it('plans magic rollback for switch and test (and boot with a reboot), and sudo for non-root users', () => {
    expect(makePlan(inputs(base))).toMatchObject({ magicRollback: true, sudo: false, goal: { locks: true } })
    expect(makePlan(inputs({ ...base, mode: 'boot' }))).toMatchObject({
      magicRollback: false,
      goal: { locks: true }
    })
    // With a reboot, boot runs the new system too: its boot is on trial, its checks run after it.
    expect(
      makePlan(inputs({ ...base, mode: 'boot', reboot: 'auto', 'health-checks': 'true' }))
    ).toMatchObject({ magicRollback: true, healthChecks: ['true'], warnings: [] })
    expect(makePlan(inputs({ ...base, mode: 'dry-activate' }))).toMatchObject({
      magicRollback: false,
      goal: { locks: false, uploadsKeys: false }
    })
    expect(deployPlan(makePlan(inputs({ ...base, 'target-user': 'pi' }))).sudo).toBe(true)
    expect(deployPlan(makePlan(inputs({ ...base, 'target-user': 'pi', sudo: 'false' }))).sudo).toBe(false)
  })
  it('warns about settings the mode ignores', () => {
    const plan = makePlan(
      inputs({ ...base, mode: 'boot', 'health-checks': 'true', 'magic-rollback': 'true' })
    )
    expect(plan.warnings).toEqual([
      'health-checks are not run in mode boot: the new system does not run after it',
      'magic-rollback has no effect in mode boot: the running system does not change'
    ])
    expect(deployPlan(plan).healthChecks).toEqual([])
  })
  it('warns that reboot does nothing in a build', () => {
    expect(makePlan(inputs({ ...base, mode: 'build', reboot: 'auto' })).warnings).toEqual([
      expect.stringMatching(/^reboot: auto has no effect in mode build/)
    ])
  })
  it('refuses a deploy mode without a target or key (inputs that skipped readInputs)', () => {
    const read = inputs(base)
    expect(() => makePlan({ ...read, target: undefined })).toThrow(ActionError)
    expect(() => makePlan({ ...read, sshKey: undefined })).toThrow(/needs target-host and ssh-private-key/)
  })
})

describe('deployJob', () => {
  it('carries the plan into what one deploy needs: goal, sudo user, timeouts', () => {
    const read = inputs({ ...base, 'target-user': 'pi', 'health-checks': 'true', 'keep-generations': '3' })
    const plan = deployPlan(makePlan(read))
    const built = { toplevel: '/nix/store/x-system', hostSystem: 'aarch64-linux', closure: [] }
    const job = deployJob(plan, { name: 'pi3', keys: [], built })
    expect(job).toMatchObject({
      name: 'pi3',
      sudoUser: 'pi',
      keepGenerations: 3,
      activation: { magicRollback: true, healthChecks: ['true'], confirmTimeoutSeconds: 60 + 2 * 30 + 30 }
    })
    expect(job.goal).toMatchObject({ mode: 'switch' })
    expect(job.reboot).toEqual({ when: 'never', timeoutSeconds: 300 })
    const rebooting = inputs({ ...base, reboot: 'auto', 'reboot-timeout': '90' })
    expect(deployJob(deployPlan(makePlan(rebooting)), { name: '', keys: [], built }).reboot).toEqual({
      when: 'auto',
      timeoutSeconds: 90
    })
    expect(deployJob({ ...plan, sudo: false }, { name: 'pi3', keys: [], built }).sudoUser).toBeUndefined()
  })
})

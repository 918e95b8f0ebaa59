import { BOOT_ENTRY_MARGIN_MS, CONFIRM_MARGIN_MS, RolledBackError } from '../../src/deploy/activate'
import { DeployJob, deployToTarget, Timed } from '../../src/deploy/deploy'
import { DeployMode, goalOf } from '../../src/deploy/goal'
import { ActionError, LockTakenError } from '../../src/errors'
import { BootTrialRecord } from '../../src/target/target'
import { AgentStartUnanswered } from '../../src/target/agent/session'
import { FakeTarget, fakeCopy, fakeJob, storePath } from './fake-target'

/**
 * The deploy sequence (src/deploy/deploy.ts and activate.ts) over a FakeTarget: every branch runs
 * without root; the e2e suites prove the same against the simulated Pi.
 */
const OLD = storePath('nixos-system-pi-old', 'o')
const NEW = storePath('nixos-system-pi-new', 'n')
const timed: Timed = (_phase, fn) => fn()

function job(mode: DeployMode = 'switch', extra: Partial<DeployJob> = {}): DeployJob {
  return fakeJob(NEW, mode, extra)
}

/** A deployment key as loadKeys gives it (content read, masked). */
const keyFile = (name: string, destDir: string) => ({
  name,
  destDir,
  user: 'root',
  group: 'root',
  permissions: '0600',
  content: 's'
})

async function deploy(t: FakeTarget, j: DeployJob = job()) {
  const copied: string[][] = []
  const outcome = await deployToTarget(t, j, fakeCopy(copied), timed)
  // Whatever the result, no finished agent's directory is left behind (its agent would wait for
  // the action there, holding the lock, until it gives up): only one the action abandoned.
  const left = [...t.agents.entries()].filter(([, a]) => a.state.outcome !== undefined && !a.abandoned)
  expect(left.map(([dir]) => dir)).toEqual([])
  return { ...outcome, copied }
}

describe('the deploy sequence over a Target', () => {
  it("a deploy plan's shard through a deploy user's gate that did not fetch from the cache, without signing-key: refused before the runner fetches anything; the target keeps its system", async () => {
    const t = new (class extends FakeTarget {
      override readonly importsSignedOnly = true
    })(OLD)
    const j = job('switch')
    const fetched: string[][] = []
    const copied: string[][] = []
    const outcome = await deployToTarget(
      t,
      {
        ...j,
        substituteOnDestination: true,
        built: { ...j.built, cache: { uri: 'https://cache.lan', publicKey: 'k-1:AAAA' } }
      },
      {
        ...fakeCopy(copied),
        fetchFromCache: async (_cache, paths) => void fetched.push(paths),
        signingPublicKey: undefined
      },
      timed
    )
    expect(outcome.error).toBeInstanceOf(ActionError)
    expect((outcome.error as ActionError).message).toMatch(
      /did not fetch \d+ of the closure's paths from https:\/\/cache\.lan, and without signing-key/
    )
    expect([fetched, copied]).toEqual([[], []])
    expect(t.current).toBe(OLD)
    expect(t.profile).toBe(OLD)
    expect(t.lockOwner).toBeUndefined()
  })
  it("a deploy plan's shard through a deploy user's gate, with a signing-key that is not the plan's cache key: the runner neither fetches nor signs; the target keeps its system", async () => {
    const j = job('switch')
    /** A gated target that fetched nothing from the plan's cache, whose key is `planKey`; signing-key fleet-1. */
    async function shard(planKey: string) {
      const t = new (class extends FakeTarget {
        override readonly importsSignedOnly = true
      })(OLD)
      const fetched: string[][] = []
      const copied: string[][] = []
      const outcome = await deployToTarget(
        t,
        {
          ...j,
          substituteOnDestination: true,
          built: { ...j.built, cache: { uri: 'https://cache.lan', publicKey: planKey } }
        },
        {
          ...fakeCopy(copied),
          fetchFromCache: async (_cache, paths) => void fetched.push(paths),
          signingPublicKey: 'fleet-1:BBBB'
        },
        timed
      )
      return { t, outcome, fetched, copied }
    }
    const other = await shard('attacker-1:AAAA')
    expect(other.outcome.error).toBeInstanceOf(ActionError)
    expect((other.outcome.error as ActionError).message).toMatch(
      /the deploy plan's cache key is another \(attacker-1:AAAA\), so the runner does not sign them/
    )
    expect([other.fetched, other.copied]).toEqual([[], []])
    expect([other.t.current, other.t.profile, other.t.lockOwner]).toEqual([OLD, OLD, undefined])
    // The same plan with the signing-key it was published with: fetched, signed and copied.
    const own = await shard('fleet-1:BBBB')
    expect(own.outcome.error).toBeUndefined()
    expect(own.fetched.length).toBe(1)
    expect(own.t.current).toBe(NEW)
  })
  it('switch: copies only what is missing, activates, confirms over a new connection, releases the lock', async () => {
    const t = new FakeTarget(OLD, [OLD, storePath('hello-2.12', 'h')])
    const { result, error, copied } = await deploy(t)
    expect(error).toBeUndefined()
    expect(copied).toEqual([[NEW]])
    expect(result).toMatchObject({
      result: 'deployed',
      changed: true,
      previousStorePath: OLD,
      generation: 2,
      confirmed: 'over a new connection'
    })
    expect(t.current).toBe(NEW)
    expect(t.profile).toBe(NEW)
    expect(t.lockOwner).toBeUndefined()
    // The lock is taken by the survey, before anything else; released last.
    expect(t.calls[0]).toBe('survey')
    expect(t.calls.indexOf('reconnect')).toBeLessThan(t.calls.indexOf('decide confirm'))
    // After the outcome, one command: the agent's directory, the GC root, the state, the lock.
    expect(t.calls.slice(t.calls.lastIndexOf('decide confirm') + 1)).toEqual([
      'wrapUp agent dir, GC root, lock',
      'close'
    ])
    expect(t.calls).not.toContain('removeAgentDir')
    expect(t.calls).not.toContain('removeGcRoot')
    expect(t.calls).not.toContain('lock release')
  })

  it('the confirmation brings back the outcome it decided: no follow poll after it', async () => {
    const t = new FakeTarget(OLD)
    let pollsAtDecision = -1
    const decide = t.decide.bind(t)
    t.decide = async (dir, decision) => {
      pollsAtDecision = t.polls
      return decide(dir, decision)
    }
    const { result, error } = await deploy(t)
    expect(error).toBeUndefined()
    expect(result).toMatchObject({ result: 'deployed', confirmed: 'over a new connection' })
    expect(pollsAtDecision).toBeGreaterThan(0)
    expect(t.polls).toBe(pollsAtDecision)
  })

  it('unchanged: answered by the survey alone, which released the lock; nothing copied or activated', async () => {
    const t = new FakeTarget(NEW)
    const { result, error, copied } = await deploy(t)
    expect(error).toBeUndefined()
    expect(result).toMatchObject({ result: 'unchanged', changed: false, copiedBytes: 0, generation: 1 })
    expect(copied).toEqual([])
    expect(t.calls).toEqual(['survey', 'close'])
    expect(t.lockOwner).toBeUndefined()
  })

  it('unchanged with keys: the keys are uploaded again under the lock, then it is released', async () => {
    const t = new FakeTarget(NEW)
    const key = keyFile('wifi', '/run/keys')
    const { result } = await deploy(t, job('switch', { keys: [key] }))
    expect(result.result).toBe('unchanged')
    expect(t.calls).toEqual(['survey', 'uploadKey wifi', 'lock release', 'close'])
    expect(t.keys.get('/run/keys/wifi')?.content).toBe('s')
  })

  it('an activation that fails is rolled back by the target: rolled-back, the error says so, the lock released', async () => {
    const t = new FakeTarget(OLD)
    t.behaviour.set(NEW, 'fails')
    const { result, error } = await deploy(t)
    expect(error).toBeInstanceOf(RolledBackError)
    expect((error as Error).message).toMatch(
      /switch-to-configuration switch failed on target root@pi \(exit 1\); rolled back to/
    )
    expect(result).toMatchObject({ result: 'rolled-back', rolledBackTo: OLD })
    expect(t.current).toBe(OLD)
    expect(t.profile).toBe(OLD)
    expect(t.lockOwner).toBeUndefined()
  })

  it('a failing health check aborts: the target rolls back, the check is in the error', async () => {
    const t = new FakeTarget(OLD)
    const { result, error } = await deploy(
      t,
      job('switch', { activation: { ...job().activation, healthChecks: ['curl -f localhost'] } })
    )
    expect(error).toBeUndefined()
    expect(result.healthChecks).toMatch(/health checks passed on attempt 1/)
    const t2 = new FakeTarget(OLD)
    t2.failingChecks.add('curl -f localhost')
    const failed = await deploy(
      t2,
      job('switch', {
        activation: { ...job().activation, healthChecks: ['curl -f localhost'], healthTimeoutSeconds: 1 }
      })
    )
    expect(failed.error).toBeInstanceOf(RolledBackError)
    expect((failed.error as Error).message).toMatch(/a health check failed on target root@pi/)
    expect(t2.calls).toContain('decide abort')
    expect(t2.current).toBe(OLD)
  })

  it('a failing health check whose abort arrives after the agent decided by itself: a failure naming the check, with or without magic rollback', async () => {
    for (const magicRollback of [true, false]) {
      const t = new FakeTarget(OLD)
      t.failingChecks.add('curl -f localhost')
      t.behaviour.set(NEW, 'late-decision')
      const failed = await deploy(
        t,
        job('switch', {
          activation: {
            ...job().activation,
            magicRollback,
            healthChecks: ['curl -f localhost'],
            healthTimeoutSeconds: 1
          }
        })
      )
      expect(failed.error).toBeInstanceOf(magicRollback ? RolledBackError : ActionError)
      expect((failed.error as Error).message).toMatch(/a health check failed on target root@pi/)
      expect(failed.result.result).not.toBe('deployed')
      expect(t.current).toBe(magicRollback ? OLD : NEW)
    }
  })

  it("the run's timeout comes near while the confirmation's connection is dialled: abort, not confirm", async () => {
    const t = new FakeTarget(OLD)
    t.confirmDialMs = 600
    const activation = {
      ...job().activation,
      runDeadline: Date.now() + CONFIRM_MARGIN_MS + BOOT_ENTRY_MARGIN_MS + 400
    }
    const { error } = await deploy(t, job('switch', { activation }))
    expect(error).toBeInstanceOf(RolledBackError)
    expect((error as Error).message).toMatch(/the run's timeout was about to pass/)
    expect(t.calls).toContain('reconnect')
    expect(t.calls).toContain('decide abort')
    expect(t.calls).not.toContain('decide confirm')
    expect(t.current).toBe(OLD)
  })

  it("a switch is not confirmed within a minute of the run's timeout (its boot entry follows the confirmation); a test is", async () => {
    const runDeadline = Date.now() + CONFIRM_MARGIN_MS + BOOT_ENTRY_MARGIN_MS / 2
    const t = new FakeTarget(OLD)
    const { error } = await deploy(t, job('switch', { activation: { ...job().activation, runDeadline } }))
    expect((error as Error).message).toMatch(/the run's timeout was about to pass/)
    expect(t.calls).toContain('decide abort')
    expect(t.current).toBe(OLD)
    const t2 = new FakeTarget(OLD)
    const { result, error: error2 } = await deploy(
      t2,
      job('test', { activation: { ...job().activation, runDeadline } })
    )
    expect(error2).toBeUndefined()
    expect(result.result).toBe('deployed')
    expect(t2.calls).toContain('decide confirm')
  })

  it('confirmed, but its boot entry could not be installed: rolled back, a failure that says so', async () => {
    const t = new FakeTarget(OLD)
    t.behaviour.set(NEW, 'boot-entry-fails')
    const { result, error } = await deploy(t)
    expect(error).toBeInstanceOf(RolledBackError)
    expect((error as Error).message).toMatch(/making it the boot default failed/)
    expect(result).toMatchObject({ result: 'rolled-back', rolledBackTo: OLD })
    expect(t.calls).toContain('decide confirm')
    expect(t.current).toBe(OLD)
    expect(t.profile).toBe(OLD)
    expect(t.lockOwner).toBeUndefined()
  })

  it('a new system that breaks SSH: the confirmation cannot get through, the target rolls itself back', async () => {
    const t = new FakeTarget(OLD)
    t.behaviour.set(NEW, 'breaks-ssh')
    const { result, error } = await deploy(t)
    expect(result.result).toBe('rolled-back')
    expect(error).toBeInstanceOf(RolledBackError)
    expect(t.current).toBe(OLD)
  })

  it('lost connection at the confirmation: it reconnects and confirms', async () => {
    const t = new FakeTarget(OLD)
    t.failedReconnects = 1
    const { result, error } = await deploy(t)
    expect(error).toBeUndefined()
    expect(result.result).toBe('deployed')
    expect(t.calls.filter(c => c === 'reconnect')).toHaveLength(2)
  }, 20_000)

  it('the target unreachable while the agent runs: the run fails, and the lock is left to the agent', async () => {
    const t = new FakeTarget(OLD)
    t.behaviour.set(NEW, 'ok')
    t.unreachableFromPoll = 1
    const { error } = await deploy(t)
    expect(error).toBeInstanceOf(ActionError)
    expect((error as Error).message).toMatch(
      /lost the SSH connection to target root@pi while following the activation log/
    )
    expect(t.calls).toContain('abandonAgent')
    // The agent had not finished: it keeps the lock (it renews it) and frees it itself.
    expect(t.calls).not.toContain('lock release')
    expect(t.lockOwner).toBeDefined()
  })

  it("the answer to the agent's start lost (it may run): the run fails saying so, and hands the lock to the agent, not releasing it", async () => {
    const t = new FakeTarget(OLD)
    t.startAnswerLost = true
    const { error } = await deploy(t)
    expect(error).toBeInstanceOf(AgentStartUnanswered)
    expect(t.calls).toContain('abandonAgent')
    expect(t.calls).not.toContain('lock release')
    expect(t.lockOwner).toBeDefined()
  })

  it('lock contention: waits while another run holds it, then surveys again under its own lock', async () => {
    const t = new FakeTarget(OLD)
    t.heldForPolls = 1
    const { result, error } = await deploy(t)
    expect(error).toBeUndefined()
    expect(result.result).toBe('deployed')
    expect(result.lockWaitMs).toBeGreaterThan(0)
    expect(t.calls.filter(c => c === 'survey')).toHaveLength(2)
    expect(t.log.lines).toContain('Waiting for the deploy lock on target root@pi, held by another run')
  }, 20_000)

  it('lock held past lock-timeout: fails naming the holder, nothing copied', async () => {
    const t = new FakeTarget(OLD)
    t.lockOwner = 'other'
    const { error, copied } = await deploy(t, job('switch', { lockTimeoutSeconds: 0 }))
    expect((error as Error).message).toMatch(/target root@pi is locked by another deploy: another run/)
    expect(copied).toEqual([])
    expect(t.lockOwner).toBe('other')
  })

  it('a run that lost its lock (taken over) activates nothing', async () => {
    const t = new FakeTarget(OLD)
    const copy = fakeCopy([])
    const j = job()
    const outcome = await deployToTarget(
      t,
      j,
      {
        fetchFromCache: async () => {},
        copy: async (target, plan) => {
          t.lockOwner = 'someone-else' // the lease ran out during a long copy, and another run took it
          return copy.copy(target, plan)
        }
      },
      timed
    )
    expect((outcome.error as Error).message).toMatch(
      /lost the deploy lock on target root@pi before activating/
    )
    expect(t.current).toBe(OLD)
    expect(t.calls.some(c => c.startsWith('startAgent'))).toBe(true)
    expect(t.lockOwner).toBe('someone-else')
  })

  it('keys are uploaded before the activation; a refused destDir fails before anything is activated', async () => {
    const t = new FakeTarget(OLD)
    const key = keyFile('wifi', '/tmp/evil')
    t.refusedKeyDirs.add('/tmp/evil')
    const { error } = await deploy(t, job('switch', { keys: [key] }))
    expect((error as Error).message).toMatch(/refusing to write it/)
    expect(t.calls.some(c => c.startsWith('startAgent'))).toBe(false)
    expect(t.current).toBe(OLD)
  })

  it('dry-activate: no lock, no keys, nothing changes; result dry-activated', async () => {
    const t = new FakeTarget(OLD)
    const key = keyFile('wifi', '/run/keys')
    const { result, error } = await deploy(t, job('dry-activate', { keys: [key] }))
    expect(error).toBeUndefined()
    expect(result.result).toBe('dry-activated')
    expect(t.calls.filter(c => c.startsWith('lock') || c.startsWith('uploadKey'))).toEqual([])
  })

  it('a kernel and initrd that do not fit on /boot: refused before the copy, the lock released', async () => {
    const t = new FakeTarget(OLD)
    t.bootFreeBytes = 2 * 1024 * 1024
    const bootFiles = [
      { name: 'k-linux-6.6-Image', bytes: 1024 * 1024 },
      { name: 'i-initrd-linux-6.6-initrd', bytes: 512 * 1024 }
    ]
    const built = { ...job().built, bootFiles }
    const { error, copied } = await deploy(t, job('switch', { built }))
    expect(error).toBeInstanceOf(ActionError)
    expect((error as ActionError).message).toMatch(
      /free on \/boot but the new generation's kernel and initrd need/
    )
    expect(copied).toEqual([])
    expect(t.current).toBe(OLD)
    expect(t.lockOwner).toBeUndefined()
    // What /boot already holds counts nothing; test and dry-activate install no boot entry.
    t.bootFiles = bootFiles.map(f => f.name)
    expect((await deploy(t, job('switch', { built }))).result.result).toBe('deployed')
    const t2 = new FakeTarget(OLD)
    t2.bootFreeBytes = 0
    expect((await deploy(t2, job('test', { built }))).result.result).toBe('deployed')
  })

  it('needs-reboot: the new kernel against what the target booted; unknown without /run/booted-system', async () => {
    const kernel = (v: string) => ({
      kernel: `/nix/store/${'k'.repeat(32)}-linux-${v}/Image`,
      kernelParams: 'quiet'
    })
    const t = new FakeTarget(OLD)
    t.booted = { system: OLD, ...kernel('6.6.51') }
    const newKernel = { ...job().built, boot: kernel('6.6.63') }
    expect((await deploy(t, job('dry-activate', { built: newKernel }))).result.needsReboot).toBe(true)
    const sameKernel = { ...job().built, boot: kernel('6.6.51') }
    expect((await deploy(t, job('switch', { built: sameKernel }))).result.needsReboot).toBe(false)
    expect(
      (await deploy(new FakeTarget(OLD), job('switch', { built: newKernel }))).result.needsReboot
    ).toBeUndefined()
  })

  describe('reboot', () => {
    const kernel = (v: string) => ({ kernel: `/nix/store/${'k'.repeat(32)}-linux-${v}/Image` })
    const newKernel = { ...job().built, boot: kernel('6.6.63') }
    const rebootJob = (when: 'auto' | 'always' | 'never', extra: Partial<DeployJob> = {}) =>
      job('switch', { built: newKernel, reboot: { when, timeoutSeconds: 30, pollMs: 10 }, ...extra })
    const bootedOld = (): FakeTarget => {
      const t = new FakeTarget(OLD)
      t.booted = { system: OLD, ...kernel('6.6.51') }
      return t
    }

    it('auto with a new kernel: activated as boot, rebooted, back with the new system booted and running', async () => {
      const t = bootedOld()
      t.downForReconnects = 2
      const { result, error } = await deploy(t, rebootJob('auto'))
      expect(error).toBeUndefined()
      expect(result).toMatchObject({ result: 'deployed', changed: true, needsReboot: true })
      expect(result.rebootMs).toBeGreaterThan(0)
      expect(t.reboots).toBe(1)
      // Nothing was switched before the reboot: the agent ran boot; no confirmation round.
      expect(t.calls).toContain('startAgent boot')
      expect(t.calls).not.toContain('startAgent switch')
      expect(t.calls).not.toContain('decide confirm')
      expect(t.calls.indexOf('reboot')).toBeGreaterThan(t.calls.indexOf('startAgent boot'))
      expect(t.current).toBe(NEW)
      expect(t.booted?.system).toBe(NEW)
      expect(t.lockOwner).toBeUndefined()
    })
    it('auto on a target that already runs the system but booted an older kernel: reboots into it, unchanged', async () => {
      const t = new FakeTarget(NEW)
      t.booted = { system: OLD, ...kernel('6.6.51') }
      const { result, error } = await deploy(t, rebootJob('auto'))
      expect(error).toBeUndefined()
      expect(result).toMatchObject({ result: 'unchanged', needsReboot: true, copiedBytes: 0 })
      expect(result.rebootMs).toBeGreaterThan(0)
      expect(t.calls).not.toContain('startAgent switch')
      expect(t.calls).not.toContain('startAgent boot')
      expect(t.booted?.system).toBe(NEW)
      expect(t.lockOwner).toBeUndefined()
      // Booted already (with its kernel, as a real target then says): no reboot, also with always.
      t.booted = { system: NEW, ...kernel('6.6.63') }
      expect((await deploy(t, rebootJob('auto'))).result).toMatchObject({
        result: 'unchanged',
        needsReboot: false
      })
      expect((await deploy(t, rebootJob('always'))).result.rebootMs).toBeUndefined()
      expect(t.reboots).toBe(1)
    })
    it('auto without a kernel change, or never: no reboot, a plain switch', async () => {
      const t = bootedOld()
      const same = job('switch', {
        built: { ...job().built, boot: kernel('6.6.51') },
        reboot: { when: 'auto', timeoutSeconds: 30, pollMs: 10 }
      })
      expect((await deploy(t, same)).result).toMatchObject({ result: 'deployed', needsReboot: false })
      expect(t.reboots).toBe(0)
      const t2 = bootedOld()
      expect((await deploy(t2, rebootJob('never'))).result).toMatchObject({
        result: 'deployed',
        needsReboot: true
      })
      expect(t2.reboots).toBe(0)
    })
    it('a target that boots something else than the new system: the step fails, saying what it booted', async () => {
      const t = bootedOld()
      t.bootsInto = OLD
      const { error } = await deploy(t, rebootJob('always'))
      expect(error).toBeInstanceOf(ActionError)
      expect((error as ActionError).message).toMatch(
        /after the reboot target root@pi runs .*-old \(booted .*-old\), not the new system/
      )
    })
    it('a target that does not come back within reboot-timeout: fails naming it', async () => {
      const t = bootedOld()
      t.downForReconnects = 1000
      const { error } = await deploy(
        t,
        job('switch', { built: newKernel, reboot: { when: 'always', timeoutSeconds: 1, pollMs: 10 } })
      )
      expect((error as ActionError).message).toMatch(
        /did not come back from its reboot within reboot-timeout \(1 s\)/
      )
      expect((error as ActionError).hint).toMatch(/needs hands on it/)
    })
    it('deployment.keys, in /run which the boot emptied, are uploaded again; the lock renewed', async () => {
      const t = bootedOld()
      const { error } = await deploy(t, rebootJob('always', { keys: [keyFile('wifi', '/run/keys')] }))
      expect(error).toBeUndefined()
      const after = t.calls.slice(t.calls.indexOf('reboot'))
      expect(after).toContain('uploadKey wifi')
      expect(after.indexOf('lock renew')).toBeLessThan(after.indexOf('uploadKey wifi'))
    })
    it('another run took the lock while the target rebooted: fails saying so', async () => {
      const t = bootedOld()
      const reboot = t.reboot.bind(t)
      t.reboot = async () => {
        const scheduled = await reboot()
        t.lockOwner = 'another-run'
        return scheduled
      }
      const { error } = await deploy(t, rebootJob('always'))
      expect((error as ActionError).message).toMatch(
        /another deploy took the deploy lock on target root@pi while it rebooted/
      )
    })
    it('health checks run after the reboot, on the new system; one failing fails the step', async () => {
      const t = bootedOld()
      t.failingChecks.add('check-new')
      const activation = { ...job().activation, healthChecks: ['check-new'], healthTimeoutSeconds: 1 }
      const { error } = await deploy(t, rebootJob('always', { activation }))
      expect((error as ActionError).message).toMatch(
        /booted on target root@pi, but a health check failed after the reboot/
      )
      expect(t.calls.indexOf('reboot')).toBeLessThan(t.calls.lastIndexOf('healthCheck check-new'))
    })

    describe('on trial (the new system has nixos/boot-trial.nix)', () => {
      const trialJob = (extra: Partial<DeployJob> = {}) =>
        rebootJob('auto', { built: { ...newKernel, bootTrialProtocol: 2 }, ...extra })
      const withCheck = { ...job().activation, healthChecks: ['check-new'], healthTimeoutSeconds: 1 }

      it('the reboot writes the trial: back to the profile as it was; confirmed after the checks pass', async () => {
        const t = bootedOld()
        const { result, error } = await deploy(t, trialJob({ activation: withCheck }))
        expect(error).toBeUndefined()
        expect(result).toMatchObject({ result: 'deployed', bootTrial: 'confirmed' })
        expect(t.calls).toContain('reboot on trial')
        expect(t.calls).not.toContain('reboot')
        const after = t.calls.slice(t.calls.indexOf('reboot on trial'))
        expect(after.indexOf('settleBootTrial check-in')).toBeLessThan(after.indexOf('healthCheck check-new'))
        expect(after.indexOf('healthCheck check-new')).toBeLessThan(after.indexOf('settleBootTrial confirm'))
        expect(t.trialVerdicts).toEqual(['check-in', 'confirm'])
        expect(result.rebootConfirmedMs).toBeGreaterThanOrEqual(0)
        expect(t.current).toBe(NEW)
        expect(t.log.lines.some(l => l.startsWith('warning: rebooting'))).toBe(false)
      })
      const recordOf = async (j: DeployJob): Promise<unknown> => {
        const t = bootedOld()
        let record: unknown
        const reboot = t.reboot.bind(t)
        t.reboot = async trial => {
          record = trial
          return reboot(trial)
        }
        await deploy(t, j)
        return record
      }
      it('what it goes back to: the previous profile and its generation; windows of reboot-timeout, then confirm-timeout', async () => {
        const record = (await recordOf(trialJob())) as BootTrialRecord
        expect(record).toMatchObject({
          system: NEW,
          previous: OLD,
          previousGeneration: 1,
          loginSeconds: 30,
          confirmSeconds: 30
        })
        // This run's lock, held through the boot for the trial's start (120 s), both windows and 60 s.
        expect(record.lock?.id).toMatch(/^[0-9a-f]{16}$/)
        expect(record.lockWindowSeconds).toBe(120 + 30 + 30 + 60)
      })
      it('a target with a one-shot boot: the record names its file; a new system that never reaches user space fails as rolled back, the previous system running', async () => {
        const t = bootedOld()
        t.bootOnce = '/boot/firmware/nix-deploy-once'
        t.panicsOnce = true
        const records: Array<BootTrialRecord | undefined> = []
        const reboot = t.reboot.bind(t)
        t.reboot = async trial => {
          records.push(trial)
          return reboot(trial)
        }
        const { result, error } = await deploy(t, trialJob())
        expect(records.map(r => r?.once)).toEqual(['/boot/firmware/nix-deploy-once'])
        expect(error).toBeInstanceOf(RolledBackError)
        expect((error as ActionError).message).toMatch(/did not reach user space/)
        expect(result).toMatchObject({ result: 'rolled-back', bootTrial: 'went-back' })
        expect(t.trialVerdicts).toEqual(['fell-back'])
        expect(t.current).toBe(OLD)
        expect(t.log.lines.some(l => l.includes('not covered on this target'))).toBe(false)
      })
      it('a target with a one-shot boot that works: confirmed, and the summary says it was booted once', async () => {
        const t = bootedOld()
        t.bootOnce = '/boot/firmware/nix-deploy-once'
        const { result, error } = await deploy(t, trialJob())
        expect(error).toBeUndefined()
        expect(result).toMatchObject({ result: 'deployed', bootTrial: 'confirmed', bootOnce: true })
        expect(t.trialVerdicts).toEqual(['check-in', 'confirm'])
      })
      it('a target without a one-shot boot: a warning that a panic is not covered', async () => {
        const t = bootedOld()
        await deploy(t, trialJob())
        expect(
          t.log.lines.some(l => l.startsWith('warning:') && l.includes('not covered on this target'))
        ).toBe(true)
      })
      it('a module of protocol 1 (no first window): one window for the boot and the confirmation, and a warning', async () => {
        const j = trialJob({ built: { ...newKernel, bootTrialProtocol: 1 } })
        const record = (await recordOf(j)) as BootTrialRecord
        expect(record).toMatchObject({
          system: NEW,
          previous: OLD,
          previousGeneration: 1,
          confirmSeconds: 60
        })
        expect(record.loginSeconds).toBeUndefined()
        const t = bootedOld()
        const { result } = await deploy(t, j)
        expect(result.bootTrial).toBe('confirmed')
        expect(t.trialVerdicts).toEqual(['confirm'])
        expect(t.log.lines).toContainEqual(
          expect.stringMatching(/^warning: the new system's boot trial .* is older than this action/)
        )
      })
      it('a failure after the boot (a key refused) rejects the trial: back on the previous system, never confirmed unchecked', async () => {
        const t = bootedOld()
        const key = keyFile('k', '/run/keys')
        const uploads = t.uploadKey.bind(t)
        let uploadsSeen = 0
        // The key goes up before the reboot; after it, its directory is refused.
        t.uploadKey = async (...args: Parameters<typeof t.uploadKey>) => {
          if (uploadsSeen++ > 0) t.refusedKeyDirs.add('/run/keys')
          return uploads(...args)
        }
        const { result, error } = await deploy(t, trialJob({ keys: [key] }))
        expect(error).toBeInstanceOf(RolledBackError)
        expect((error as ActionError).message).toMatch(
          /after the reboot into the new system on target root@pi, .*: the deploy rejected its boot trial \(only a checked system is confirmed\)/
        )
        expect(t.trialVerdicts).toEqual(['check-in', 'reject'])
        expect(result).toMatchObject({ result: 'rolled-back', bootTrial: 'went-back' })
        expect(t.current).toBe(OLD)
      })
      it('another run (of the same system) took the trial over while it rebooted: this run fails, and neither rejects nor confirms it', async () => {
        const t = bootedOld()
        const reboot = t.reboot.bind(t)
        t.reboot = async trial => {
          const scheduled = await reboot(trial)
          t.lockOwner = 'the-re-run'
          return scheduled
        }
        const { error } = await deploy(t, trialJob())
        expect(error).toBeInstanceOf(LockTakenError)
        expect(t.trialVerdicts).toEqual(['check-in'])
        expect(t.lockOwner).toBe('the-re-run')
      })
      it("the run's timeout about to pass after the checks: rejected, not confirmed", async () => {
        const t = bootedOld()
        const activation = { ...job().activation, runDeadline: Date.now() + 5_000 }
        const { error } = await deploy(t, trialJob({ activation }))
        expect((error as ActionError).message).toMatch(
          /the run's timeout was about to pass .* rejected its boot trial/
        )
        expect(t.trialVerdicts).toEqual(['check-in', 'reject'])
      })
      it('a new system nobody can reach after its boot: the trial goes back; rolled back to the previous system', async () => {
        const t = bootedOld()
        t.trialUnreachable = true
        const { result, error } = await deploy(t, trialJob())
        expect(error).toBeInstanceOf(RolledBackError)
        expect((error as ActionError).message).toMatch(
          /booted the new system, but the deploy could not reach it within its boot trial's window \(30 s of its boot\)/
        )
        expect(result).toMatchObject({ result: 'rolled-back', rolledBackTo: OLD, bootTrial: 'went-back' })
        expect(t.current).toBe(OLD)
        expect(t.profile).toBe(OLD)
        expect(t.booted?.system).toBe(OLD)
        expect(t.reboots).toBe(2)
        expect(t.lockOwner).toBeUndefined()
      })
      it('a health check failing after the boot rejects the trial: back on the previous system', async () => {
        const t = bootedOld()
        t.failingChecks.add('check-new')
        const { result, error } = await deploy(t, trialJob({ activation: withCheck }))
        expect(error).toBeInstanceOf(RolledBackError)
        expect((error as ActionError).message).toMatch(
          /a health check failed after the reboot .*, so the deploy rejected its boot trial/
        )
        expect(result).toMatchObject({ result: 'rolled-back', bootTrial: 'went-back' })
        expect(t.trialVerdicts).toEqual(['check-in', 'reject'])
        expect(t.current).toBe(OLD)
        expect(t.profile).toBe(OLD)
      })
      it('rejected, and the new system boots once more before its trial goes back (a reboot cut it): waited for, rolled back', async () => {
        const t = bootedOld()
        t.failingChecks.add('check-new')
        t.trialCutOnReject = true
        const { result, error } = await deploy(t, trialJob({ activation: withCheck }))
        expect(error).toBeInstanceOf(RolledBackError)
        expect(result).toMatchObject({ result: 'rolled-back', bootTrial: 'went-back' })
        expect(t.current).toBe(OLD)
        expect(t.booted?.system).toBe(OLD)
      })
      it('a confirmation that comes after the trial gave up: rolled back, saying to raise confirm-timeout', async () => {
        const t = bootedOld()
        t.trialExpired = true
        const { result, error } = await deploy(t, trialJob())
        expect(error).toBeInstanceOf(RolledBackError)
        expect((error as ActionError).message).toMatch(/confirmed the new system on target root@pi too late/)
        expect((error as ActionError).hint).toMatch(/Raise confirm-timeout/)
        expect(result.result).toBe('rolled-back')
        expect(t.current).toBe(OLD)
      })
      it('no trial without magic rollback, nor without the module: a warning that a broken boot needs hands', async () => {
        const t = bootedOld()
        const off = { ...job().activation, magicRollback: false }
        expect((await deploy(t, trialJob({ activation: off }))).result.bootTrial).toBeUndefined()
        expect(t.calls).toContain('reboot')
        expect(t.log.lines).toContainEqual(
          expect.stringMatching(/^warning: rebooting .* without a boot trial: /)
        )
        const t2 = bootedOld()
        await deploy(t2, rebootJob('auto'))
        expect(t2.log.lines).toContainEqual(expect.stringMatching(/lacks nixos\/boot-trial.nix/))
      })
      describe("an earlier run's trial of this system, pending (that run was cancelled after its reboot)", () => {
        const cancelledAfterReboot = async (): Promise<FakeTarget> => {
          const t = bootedOld()
          t.generations.push(NEW)
          t.profileGen = 2
          await t.reboot({
            system: NEW,
            previous: OLD,
            previousGeneration: 1,
            confirmSeconds: 30,
            loginSeconds: 300
          })
          t.booted = { system: NEW, ...kernel('6.6.63') }
          t.calls.length = 0
          return t
        }
        it('is checked and confirmed by the re-run: unchanged, the trial confirmed, no second reboot', async () => {
          const t = await cancelledAfterReboot()
          const { result, error } = await deploy(t, trialJob({ activation: withCheck }))
          expect(error).toBeUndefined()
          expect(result).toMatchObject({ result: 'unchanged', bootTrial: 'confirmed', earlierTrial: true })
          expect(t.trialVerdicts).toEqual(['check-in', 'confirm'])
          expect(t.calls.indexOf('healthCheck check-new')).toBeLessThan(
            t.calls.indexOf('settleBootTrial confirm')
          )
          expect(t.calls).not.toContain('reboot on trial')
          expect(t.current).toBe(NEW)
          expect(t.trial).toBeUndefined()
        })
        it('is left alone by a dry run (it changes nothing, and holds no lock)', async () => {
          const t = await cancelledAfterReboot()
          await deploy(t, trialJob({ goal: goalOf('dry-activate') }))
          expect(t.trialVerdicts).toEqual([])
          expect(t.trial).toBeDefined()
        })
        it('whose check fails: rejected, back on the previous system, rolled back', async () => {
          const t = await cancelledAfterReboot()
          t.failingChecks.add('check-new')
          const { result, error } = await deploy(t, trialJob({ activation: withCheck }))
          expect(error).toBeInstanceOf(RolledBackError)
          expect(result).toMatchObject({ result: 'rolled-back', bootTrial: 'went-back', earlierTrial: true })
          expect(t.trialVerdicts).toEqual(['check-in', 'reject'])
          expect(t.current).toBe(OLD)
        })
        it("of another system: not this run's to settle (it deploys as usual)", async () => {
          const t = await cancelledAfterReboot()
          const other = storePath('nixos-system-other')
          const { result } = await deploy(
            t,
            trialJob({
              built: {
                ...newKernel,
                toplevel: other,
                closure: [{ path: other, narSize: 1, references: [] }],
                bootTrialProtocol: 2
              }
            })
          )
          // (On a real target the trial's lock keeps such a run waiting until the trial ended.)
          expect(result).toMatchObject({ result: 'deployed' })
          expect(result.earlierTrial).toBeUndefined()
          expect(t.trialVerdicts).toEqual([])
        })
      })
      it('a target already on the new system, booted on an older one: the trial goes back to what booted', async () => {
        const t = new FakeTarget(NEW)
        t.booted = { system: OLD, ...kernel('6.6.51') }
        t.trialUnreachable = true
        const { result } = await deploy(t, trialJob())
        expect(result).toMatchObject({ result: 'rolled-back', rolledBackTo: OLD })
        expect(t.current).toBe(OLD)
      })
    })
  })

  it.each([
    // A switch that waits sets the profile only once confirmed: the dead agent had made nothing.
    [true, 'rollbackOf - false'],
    [false, 'rollbackOf 2 true']
  ])(
    'an agent killed half-way (no outcome; magic rollback %s): seen at once, another agent puts the target back',
    async (magicRollback, rollbackOf) => {
      const t = new FakeTarget(OLD)
      t.behaviour.set(NEW, 'agent-killed')
      const settings = {
        ...job().activation,
        activationTimeoutSeconds: 3600,
        magicRollback,
        healthChecks: []
      }
      const started = Date.now()
      const { result, error } = await deploy(t, job('switch', { activation: settings }))
      // Not after activation-timeout (an hour here): at the first look.
      expect(Date.now() - started).toBeLessThan(10_000)
      expect(error).toBeInstanceOf(RolledBackError)
      expect((error as ActionError).message).toMatch(
        /the activation agent on target root@pi ended without an outcome: it was killed .*; the target was put back as it was/
      )
      expect(result).toMatchObject({ result: 'rolled-back', rolledBackTo: OLD })
      // The second agent got what the first had recorded: the generation it made, a new one.
      expect(t.calls).toContain(rollbackOf)
      expect(t.current).toBe(OLD)
      expect(t.profile).toBe(OLD)
      expect(t.lockOwner).toBeUndefined()
    }
  )

  it('boot: sets the profile only; changed means the profile changed', async () => {
    const t = new FakeTarget(OLD)
    const { result } = await deploy(t, job('boot'))
    expect(result).toMatchObject({ result: 'deployed', changed: true })
    expect(t.current).toBe(OLD)
    expect(t.profile).toBe(NEW)
  })

  it('keep-generations: old generations are pruned after a deploy, never the running or current one', async () => {
    const t = new FakeTarget(OLD)
    t.generations = [storePath('g1', 'b'), storePath('g2', 'c'), OLD]
    t.profileGen = 3
    const { result } = await deploy(t, job('switch', { keepGenerations: 2 }))
    expect(result.deletedGenerations).toEqual([1, 2])
    // Pruning runs under the lock: the wrap-up keeps it, and it is released after the prune.
    expect(t.calls.slice(-4)).toEqual([
      'wrapUp agent dir, GC root',
      'deleteGenerations 1,2',
      'lock release',
      'close'
    ])
    expect(t.lockOwner).toBeUndefined()
  })
})

describe("a deploy plan's shard leaves its record on the machine (src/target/plan-record.ts)", () => {
  const stamp = { plan: '0123456789abcdef', shard: '2', run: '7/1' }
  // Store paths of Nix's base32 only: the record keeps no other (the fake reads it back as probe.sh prints it).
  const FROM = storePath('nixos-system-pi-old', 'a')
  /** The deployed record of a deploy from FROM (generation 1) that made generation 2. */
  const deployedFrom = {
    ...stamp,
    state: 'deployed',
    system: NEW,
    mode: 'switch',
    beforeCurrent: FROM,
    beforeProfile: FROM,
    beforeGeneration: 1,
    generation: 2
  }

  it("started under the lock before the copy, then deployed with the way back in the deploy's last command, before it releases the lock", async () => {
    const t = new FakeTarget(FROM)
    const { error } = await deploy(t, job('switch', { planStamp: stamp }))
    expect(error).toBeUndefined()
    const at = (c: string): number => t.calls.indexOf(c)
    expect(at('writePlanRecord started')).toBeGreaterThan(at('survey'))
    // One command: the record (wrap-up.sh writes it first), then the lock released.
    expect(at('wrapUp plan record deployed, agent dir, GC root, lock')).toBeGreaterThan(at('decide confirm'))
    expect(t.calls.filter(c => c.startsWith('writePlanRecord'))).toEqual(['writePlanRecord started'])
    expect(t.lockOwner).toBeUndefined()
    expect(t.planRecord).toEqual({ ...deployedFrom, createdNew: true })
  })

  it('a deployed record the machine cannot write fails the deploy and says why; the rest of the last command is done', async () => {
    const t = new FakeTarget(FROM)
    t.planRecordWriteFails = true
    const { error } = await deploy(t, job('switch', { planStamp: stamp }))
    expect(error).toBeInstanceOf(ActionError)
    expect((error as ActionError).message).toMatch(
      /writing the deploy plan record on .* failed: No space left on device/
    )
    // The system runs; the record stays as the deploy started it; the lock is not left behind.
    expect(t.current).toBe(NEW)
    expect(t.planRecord).toMatchObject({ state: 'started', system: NEW })
    expect(t.lockOwner).toBeUndefined()
  })

  it.each(['before', 'after-record'] as const)(
    'a link lost during the last command (%s the target wrote the record): the record says deployed, not failed',
    async when => {
      const t = new FakeTarget(FROM)
      t.wrapUpLinkFails = when
      const { error } = await deploy(t, job('switch', { planStamp: stamp }))
      // The verify could not read the state: the run fails and says why; the target runs the new system.
      expect(error).toBeInstanceOf(ActionError)
      expect(t.current).toBe(NEW)
      // Confirmed, so what rollback-fleet must undo: recorded as deployed, with the way back.
      expect(t.planRecord).toMatchObject({
        state: 'deployed',
        system: NEW,
        beforeCurrent: FROM,
        generation: 2
      })
      expect(t.lockOwner).toBeUndefined()
      // The finished agent's directory, which the last command did not remove, is gone too.
      expect(t.agents.size).toBe(0)
    }
  )

  it('a deployed record the last command could not write, the lock still held (old generations to prune): written again as deployed', async () => {
    const t = new FakeTarget(FROM)
    t.planRecordWriteFails = true
    const { error } = await deploy(t, job('switch', { planStamp: stamp, keepGenerations: 5 }))
    expect(error).toBeInstanceOf(ActionError)
    expect(t.calls.filter(c => c.startsWith('writePlanRecord'))).toEqual([
      'writePlanRecord started',
      'writePlanRecord deployed'
    ])
    expect(t.planRecord).toMatchObject({ state: 'deployed', system: NEW, generation: 2 })
    expect(t.lockOwner).toBeUndefined()
  })

  it("a run that lost the lock before its last command leaves the new holder's record as it is", async () => {
    const t = new FakeTarget(FROM)
    const theirs = { ...stamp, run: '8/1', state: 'started' as const, system: FROM, mode: 'switch' }
    t.onWrapUp = () => {
      // The lease ran out (a link down for long), and another run of the plan took the machine over.
      t.lockOwner = 'someone-else'
      t.planRecord = theirs
    }
    await deploy(t, job('switch', { planStamp: stamp }))
    expect(t.calls).toContain('wrapUp plan record deployed, agent dir, GC root, lock')
    expect(t.planRecord).toEqual(theirs)
    expect(t.lockOwner).toBe('someone-else')
  })

  it('a deploy that rolled back says so, and why', async () => {
    const t = new FakeTarget(FROM)
    t.failingChecks.add('check-new')
    const { error } = await deploy(
      t,
      job('switch', {
        planStamp: stamp,
        activation: { ...job().activation, healthChecks: ['check-new'], healthTimeoutSeconds: 1 }
      })
    )
    expect(error).toBeInstanceOf(RolledBackError)
    expect(t.planRecord).toMatchObject({ state: 'rolled-back', system: NEW, beforeCurrent: FROM })
    expect(t.planRecord?.message).toMatch(/a health check failed/)
  }, 20_000)

  it("a target that ran the plan's system already: recorded as unchanged under the lock (no way back); a re-run of the plan keeps its first record", async () => {
    const same = new FakeTarget(NEW)
    await deploy(same, job('switch', { planStamp: stamp }))
    expect(same.calls).toEqual(['survey', 'writePlanRecord unchanged', 'lock release', 'close'])
    expect(same.planRecord).toMatchObject({ state: 'unchanged', system: NEW, beforeCurrent: undefined })
    const t = new FakeTarget(FROM)
    await deploy(t, job('switch', { planStamp: stamp }))
    t.calls = []
    await deploy(t, job('switch', { planStamp: { ...stamp, run: '7/2' } }))
    expect(t.calls).toEqual(['survey', 'lock release', 'close'])
    expect(t.planRecord).toMatchObject({ state: 'deployed', run: '7/1', beforeCurrent: FROM })
  })

  it("a re-run that finds the plan's system left by an earlier attempt that failed: its failure stands (an unchanged machine is not checked again)", async () => {
    const t = new FakeTarget(FROM)
    t.generations.push(NEW)
    t.profileGen = 2
    t.current = NEW
    const failed = {
      ...stamp,
      state: 'failed' as const,
      system: NEW,
      mode: 'switch',
      beforeCurrent: FROM,
      message: 'a health check failed'
    }
    t.planRecord = failed
    await deploy(t, job('switch', { planStamp: { ...stamp, run: '7/2' } }))
    expect(t.calls).toEqual(['survey', 'lock release', 'close'])
    expect(t.planRecord).toEqual(failed)
  })

  it.each(['started'] as const)(
    "a re-run that finds the plan's system left by an earlier attempt whose record says %s: records its success, with that attempt's way back",
    async state => {
      const t = new FakeTarget(FROM)
      t.generations.push(NEW)
      t.profileGen = 2
      t.current = NEW
      t.planRecord = {
        ...stamp,
        state,
        system: NEW,
        mode: 'switch',
        beforeCurrent: FROM,
        beforeProfile: FROM,
        beforeGeneration: 1
      }
      const { error, result } = await deploy(t, job('switch', { planStamp: { ...stamp, run: '7/2' } }))
      expect(error).toBeUndefined()
      expect(result.result).toBe('unchanged')
      expect(t.calls).toEqual(['survey', 'writePlanRecord deployed', 'lock release', 'close'])
      // The generation is the profile's; that attempt may not have made it: a rollback keeps it.
      expect(t.planRecord).toEqual({ ...deployedFrom, run: '7/2', createdNew: false })
    }
  )

  it("a run that lost the lock to another during its copy writes nothing over that run's record", async () => {
    const t = new FakeTarget(FROM)
    const copy = fakeCopy([])
    const outcome = await deployToTarget(
      t,
      job('switch', { planStamp: stamp }),
      {
        fetchFromCache: async () => {},
        copy: async (target, plan) => {
          t.lockOwner = 'someone-else' // the lease ran out during a long copy, and another run took it
          return copy.copy(target, plan)
        }
      },
      timed
    )
    expect(outcome.error).toBeInstanceOf(ActionError)
    expect(t.calls.filter(c => c.startsWith('writePlanRecord'))).toEqual([
      'writePlanRecord started',
      'writePlanRecord failed (not held)'
    ])
    expect(t.planRecord?.state).toBe('started')
  })

  it("a deploy that never held the machine's lock leaves another run's record as it is", async () => {
    const t = new FakeTarget(FROM)
    t.lockOwner = 'other'
    const { error } = await deploy(t, job('switch', { planStamp: stamp, lockTimeoutSeconds: 0 }))
    expect(error).toBeInstanceOf(ActionError)
    expect(t.calls.filter(c => c.startsWith('writePlanRecord'))).toEqual([])
  })

  it('no plan, no record', async () => {
    const t = new FakeTarget(FROM)
    await deploy(t)
    expect(t.calls.filter(c => c.startsWith('writePlanRecord'))).toEqual([])
  })
})

import { ActionError } from '../../src/errors'
import { TargetSession } from '../../src/target/session'
import { plainLog } from '../../src/log/untrusted'
import type { RemoteHost } from '../../src/ssh/connection'

/** A stand-in connection: alive until told otherwise; exec answers or fails as set. */
function fakeHost(
  n: number,
  opts: { alive?: boolean; fail?: boolean; redialTarget?: () => Promise<RemoteHost | undefined> } = {}
): RemoteHost {
  let alive = opts.alive ?? true
  return {
    redialTarget: opts.redialTarget ?? (async () => undefined),
    target: { label: 'target root@pi' },
    get alive() {
      return alive
    },
    close: () => {
      alive = false
    },
    exec: async () => {
      if (opts.fail)
        throw new ActionError('lost the SSH connection to target root@pi while following', '', 'connect')
      return { exitCode: 0, stdout: `host ${n}`, stderr: '' }
    }
  } as unknown as RemoteHost
}

describe('the session to a target', () => {
  it('keeps its label while no connection is live (a target rebooting, a failed redial)', async () => {
    const session = new TargetSession(
      fakeHost(0),
      async () => {
        throw new ActionError('cannot reach target root@pi', '', 'connect')
      },
      plainLog
    )
    await expect(session.reconnect()).rejects.toThrow(/cannot reach/)
    expect(session.label).toBe('target root@pi')
  })
  it('dials once when several commands find the connection gone at the same time', async () => {
    let dials = 0
    const session = new TargetSession(
      fakeHost(0, { alive: false }),
      async () => {
        dials++
        await new Promise(r => setTimeout(r, 20))
        return fakeHost(dials)
      },
      plainLog
    )
    const answers = await Promise.all([
      session.exec('a'),
      session.exec('b'),
      session.reconnect().then(() => session.exec('c'))
    ])
    expect(dials).toBe(1)
    expect(answers.map(a => a.stdout)).toEqual(['host 1', 'host 1', 'host 1'])
  })
  it("a confirmation's redial goes through the live jump host chain when it can, else dials both hops; a target the chain cannot reach fails", async () => {
    let dials = 0
    const dial = async (): Promise<RemoteHost> => fakeHost(100 + ++dials)
    // The chain is up: the target alone is dialled again, through it.
    const viaChain = new TargetSession(fakeHost(0, { redialTarget: async () => fakeHost(1) }), dial, plainLog)
    await viaChain.redialTarget()
    expect((await viaChain.exec('x')).stdout).toBe('host 1')
    expect(dials).toBe(0)
    // A plain reconnect (a reboot, a lost link) dials both hops, whatever the chain.
    let asked = false
    const plain = new TargetSession(
      fakeHost(0, {
        redialTarget: async () => {
          asked = true
          return fakeHost(1)
        }
      }),
      async () => fakeHost(99),
      plainLog
    )
    await plain.reconnect()
    expect(asked).toBe(false)
    expect((await plain.exec('x')).stdout).toBe('host 99')
    // No chain of its own (or it is down): both hops.
    const direct = new TargetSession(fakeHost(0), dial, plainLog)
    await direct.redialTarget()
    expect((await direct.exec('x')).stdout).toBe('host 101')
    // The current connection is lost: both hops, without asking it.
    const lost = new TargetSession(
      fakeHost(0, {
        alive: false,
        redialTarget: async () => {
          asked = true
          return fakeHost(1)
        }
      }),
      dial,
      plainLog
    )
    await lost.redialTarget()
    expect(asked).toBe(false)
    expect((await lost.exec('x')).stdout).toBe('host 102')
    // Through a live chain the target refuses: that is the answer (the confirmation fails), and the
    // next reconnect may try again.
    let tries = 0
    const refused = new TargetSession(
      fakeHost(0, {
        redialTarget: async () => {
          tries++
          throw new ActionError('target root@pi: connection refused', '', 'connect')
        }
      }),
      dial,
      plainLog
    )
    await expect(refused.redialTarget()).rejects.toThrow(/connection refused/)
    await expect(refused.redialTarget()).rejects.toThrow(/connection refused/)
    expect(tries).toBe(2)
    expect(dials).toBe(2)
  })
  it('retries an idempotent command on a new connection after a failure, until its deadline', async () => {
    let dials = 0
    const session = new TargetSession(fakeHost(0, { fail: true }), async () => fakeHost(++dials), plainLog)
    const r = await session.execRetrying('x', Date.now() + 10_000)
    expect(r.stdout).toBe('host 1')
    const dead = new TargetSession(
      fakeHost(0, { fail: true }),
      async () => fakeHost(1, { fail: true }),
      plainLog
    )
    await expect(dead.execRetrying('x', Date.now() + 100)).rejects.toThrow(
      /^lost the SSH connection to target root@pi while following$/
    )
  })
})

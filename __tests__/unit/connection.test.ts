import {
  forwardThrough,
  gatherWrites,
  ignoreHostKeyAnnouncements,
  NEVER_OFFERED_CIPHERS
} from '../../src/ssh/connection'

describe('ciphers', () => {
  it('never offers chacha20-poly1305 (ssh2 pure-JS corrupts it through a jump host)', () => {
    // ssh2's own list builder, as connect() uses it with { remove: NEVER_OFFERED_CIPHERS }.
    const utils = require('ssh2/lib/utils')
    const constants = require('ssh2/lib/protocol/constants')
    const offered: string[] = utils.generateAlgorithmList(
      { remove: NEVER_OFFERED_CIPHERS },
      constants.DEFAULT_CIPHER,
      constants.SUPPORTED_CIPHER
    )
    expect(offered).not.toContain('chacha20-poly1305@openssh.com')
    expect(offered[0]).toBe('aes128-gcm@openssh.com')
  })
})

describe("the server's host keys announcement after the login (hostkeys-00@openssh.com)", () => {
  /** A client's protocol as ssh2 1.17 holds it: ssh2's own handler records what it was given. */
  function client() {
    const ssh2Saw: string[] = []
    const acknowledged: number[] = []
    const proto = {
      _handlers: {
        GLOBAL_REQUEST: (_p: unknown, name: string, _wantReply: boolean) => void ssh2Saw.push(name)
      },
      requestSuccess: () => void acknowledged.push(1)
    }
    return { client: { _protocol: proto } as never, proto, ssh2Saw, acknowledged }
  }
  it('is taken without asking the server to prove its keys; other global requests go to ssh2', () => {
    const c = client()
    let ignored = 0
    expect(ignoreHostKeyAnnouncements(c.client, () => ignored++)).toBe(true)
    c.proto._handlers.GLOBAL_REQUEST(c.proto, 'hostkeys-00@openssh.com', false)
    expect(c.ssh2Saw).toEqual([])
    expect(c.acknowledged).toEqual([])
    c.proto._handlers.GLOBAL_REQUEST(c.proto, 'keepalive@openssh.com', true)
    expect(c.ssh2Saw).toEqual(['keepalive@openssh.com'])
    expect(ignored).toBe(1)
  })
  it('is acknowledged when the server asks for a reply', () => {
    const c = client()
    ignoreHostKeyAnnouncements(c.client)
    c.proto._handlers.GLOBAL_REQUEST(c.proto, 'hostkeys-00@openssh.com', true)
    expect(c.acknowledged).toEqual([1])
    expect(c.ssh2Saw).toEqual([])
  })
  it("leaves a client without ssh2's internals as it is (says so)", () => {
    expect(ignoreHostKeyAnnouncements({} as never)).toBe(false)
    expect(ignoreHostKeyAnnouncements({ _protocol: { _handlers: {} } } as never)).toBe(false)
  })
})

describe('a channel forwarded by the jump host', () => {
  const ep = (label: string) => ({ label, host: label, port: 22 }) as never
  it('that opens only after the time limit is closed at once (no connection left open on the jump host)', async () => {
    let closed = 0
    let answer: ((err: Error | undefined, channel: never) => void) | undefined
    const jump = {
      forwardOut: (_a: string, _b: number, _h: string, _p: number, cb: typeof answer) => {
        answer = cb
        return true
      }
    } as never
    await expect(forwardThrough(jump, ep('jump'), ep('pi'), 20)).rejects.toThrow(
      /could not reach pi within the connect timeout/
    )
    answer!(undefined, { close: () => closed++ } as never)
    expect(closed).toBe(1)
  })
  it('that opens in time is the tunnel, left open', async () => {
    let closed = 0
    const channel = {
      close: () => closed++,
      write: () => true,
      end: () => undefined,
      destroy: () => undefined
    }
    const jump = {
      forwardOut: (
        _a: string,
        _b: number,
        _h: string,
        _p: number,
        cb: (e: undefined, c: unknown) => void
      ) => {
        cb(undefined, channel)
        return true
      }
    } as never
    await expect(forwardThrough(jump, ep('jump'), ep('pi'), 1000)).resolves.toBe(channel)
    expect(closed).toBe(0)
  })
})

describe('the writes of a session tunnelled through a jump host (gatherWrites)', () => {
  /** A channel that records what reaches it. */
  const recorder = () => {
    const calls: string[] = []
    const channel = {
      destroyed: false,
      write: (chunk: Buffer) => (calls.push(`write ${chunk.toString()}`), true),
      end: () => calls.push('end'),
      destroy: () => ((channel.destroyed = true), calls.push('destroy'))
    }
    gatherWrites(channel as never)
    return {
      channel: channel as unknown as { write(b: Buffer): boolean; end(): void; destroy(): void },
      calls
    }
  }
  const tick = () => new Promise(resolve => setImmediate(resolve))

  it('gathers the small writes of one tick into one, in order; the next tick is a write of its own', async () => {
    const { channel, calls } = recorder()
    for (const part of ['a', 'b', 'c']) expect(channel.write(Buffer.from(part))).toBe(true)
    expect(calls).toEqual([])
    await tick()
    channel.write(Buffer.from('d'))
    await tick()
    expect(calls).toEqual(['write abc', 'write d'])
  })

  it("passes a copy's large packet on at once, after what was gathered before it", async () => {
    const { channel, calls } = recorder()
    const big = 'x'.repeat(32 * 1024)
    channel.write(Buffer.from('a'))
    channel.write(Buffer.from(big))
    expect(calls).toEqual(['write a', `write ${big}`])
    await tick()
    expect(calls).toHaveLength(2)
  })

  it('writes what was gathered before the channel ends or is destroyed', async () => {
    const ended = recorder()
    ended.channel.write(Buffer.from('a'))
    ended.channel.end()
    expect(ended.calls).toEqual(['write a', 'end'])
    const destroyed = recorder()
    destroyed.channel.write(Buffer.from('b'))
    destroyed.channel.destroy()
    await tick()
    expect(destroyed.calls).toEqual(['write b', 'destroy'])
  })
})

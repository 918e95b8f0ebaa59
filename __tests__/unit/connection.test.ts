import { forwardThrough, NEVER_OFFERED_CIPHERS } from '../../src/ssh/connection'

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
    const channel = { close: () => closed++ }
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

import { NEVER_OFFERED_CIPHERS } from '../../src/ssh/connection'

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

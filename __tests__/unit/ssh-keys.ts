import { utils } from 'ssh2'

type KeyType = 'ed25519' | 'rsa' | 'ecdsa'
interface KeyOptions {
  bits?: number
  passphrase?: string
  cipher?: string
  rounds?: number
}

/**
 * A key pair from ssh2's generator that ssh2 itself reads back. ssh2 1.17 writes now and then an
 * ed25519 key whose public half is 31 bytes (a leading zero byte dropped), which its own parser
 * then refuses ("Malformed OpenSSH private key"): 11 keys in 3000 here. A test's key is made again
 * until it reads back, so no test fails by the draw.
 */
export function sshKeyPair(type: KeyType, opts?: KeyOptions): { private: string; public: string } {
  const generate = utils.generateKeyPairSync as unknown as (
    t: KeyType,
    o?: KeyOptions
  ) => { private: string; public: string }
  for (let attempt = 1; ; attempt++) {
    const pair = opts ? generate(type, opts) : generate(type)
    const secret = utils.parseKey(pair.private, opts?.passphrase)
    const pub = utils.parseKey(pair.public)
    if (!(secret instanceof Error) && !(pub instanceof Error)) return pair
    if (attempt === 20) throw secret instanceof Error ? secret : pub
  }
}

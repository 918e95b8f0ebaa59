import { createHash, createPrivateKey, createPublicKey } from 'crypto'

/**
 * A Nix signing key (`nix-store --generate-binary-cache-key NAME secret public` writes its secret
 * half as `NAME:base64`, 64 bytes: libsodium's Ed25519 seed followed by the public key). The action
 * signs the store cache's entries with it and restores only entries it signed (cache/store-cache.ts).
 */
export interface SigningKey {
  /** The key's name (before the colon), as signatures and trusted-public-keys show it. */
  name: string
  /** The secret key's text, as Nix reads it: masked, kept in memory, handed to Nix on a pipe. */
  secret: string
  /** `NAME:base64` of the public key: what a trusted-public-keys list names. */
  publicKey: string
  /** A short hash of the public key, for cache keys: entries of one key never mix with another's. */
  fingerprint: string
}

/** DER prefix of a PKCS#8 Ed25519 private key; the 32-byte seed follows it. */
const PKCS8_ED25519 = Buffer.from('302e020100300506032b657004220420', 'hex')

/**
 * Parses a Nix secret signing key, or returns what is wrong with it. The message never quotes the
 * value (it is a secret); a key whose halves do not belong together is refused, so a truncated or
 * edited secret fails here, not as an unverifiable cache later.
 */
export function parseSigningKey(text: string): SigningKey | string {
  const m = /^([^:\s]+):([A-Za-z0-9+/]+={0,2})$/.exec(text.trim())
  if (!m)
    return 'not a Nix secret signing key (NAME:BASE64, the secret file that nix-store --generate-binary-cache-key writes)'
  const bytes = Buffer.from(m[2], 'base64')
  if (bytes.length !== 64)
    return `not a Nix secret signing key: ${bytes.length} bytes after base64, not 64 (is it the public key?)`
  const seed = bytes.subarray(0, 32)
  const derived = createPublicKey(
    createPrivateKey({ key: Buffer.concat([PKCS8_ED25519, seed]), format: 'der', type: 'pkcs8' })
  )
    .export({ format: 'der', type: 'spki' })
    .subarray(-32)
  if (!derived.equals(bytes.subarray(32)))
    return 'not a Nix secret signing key: its public half does not match its seed (a damaged or edited key)'
  const publicKey = `${m[1]}:${derived.toString('base64')}`
  return {
    name: m[1],
    secret: `${m[1]}:${m[2]}`,
    publicKey,
    fingerprint: createHash('sha256').update(publicKey).digest('hex').slice(0, 12)
  }
}

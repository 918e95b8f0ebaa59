import { createHash, createHmac } from 'crypto'

/**
 * OpenSSH known_hosts parsing and matching (sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT"), written here
 * because ssh2 has none. Pure: no I/O.
 *
 * Supported: comma-separated patterns with `*` and `?`, negated patterns (`!pat`), `[host]:port`,
 * hashed names (`|1|salt|hmac`), several keys per host, `@revoked` (refuses that key everywhere) and
 * `@cert-authority` (recognised, so that a host with only CA lines gets a clear "not supported").
 */
export interface KnownHostLine {
  marker: '' | '@revoked' | '@cert-authority'
  patterns: string
  keyType: string
  /** The key blob in SSH wire format (what the server offers in its host key). */
  key: Buffer
  lineNumber: number
}

export function parseKnownHosts(text: string): { lines: KnownHostLine[]; errors: string[] } {
  const lines: KnownHostLine[] = []
  const errors: string[] = []
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim()
    if (line === '' || line.startsWith('#')) return
    const fields = line.split(/\s+/)
    let marker: KnownHostLine['marker'] = ''
    if (fields[0].startsWith('@')) {
      const m = fields.shift() as string
      if (m !== '@revoked' && m !== '@cert-authority') {
        errors.push(`known-hosts line ${i + 1}: unknown marker ${m}`)
        return
      }
      marker = m
    }
    if (fields.length < 3) {
      errors.push(`known-hosts line ${i + 1}: expected "host-patterns key-type base64-key"`)
      return
    }
    const [patterns, keyType, b64] = fields
    const key = Buffer.from(b64, 'base64')
    if (!/^[A-Za-z0-9+/]+=*$/.test(b64) || key.length < 8 || blobKeyType(key) !== keyType) {
      errors.push(`known-hosts line ${i + 1}: the key is not a valid ${keyType} public key`)
      return
    }
    lines.push({ marker, patterns, keyType, key, lineNumber: i + 1 })
  })
  return { lines, errors }
}

/** The key type named inside an SSH wire-format key blob (its first string). */
export function blobKeyType(blob: Buffer): string | undefined {
  if (blob.length < 4) return undefined
  const len = blob.readUInt32BE(0)
  if (len > 64 || 4 + len > blob.length) return undefined
  return blob.subarray(4, 4 + len).toString('latin1')
}

/** The name OpenSSH looks a host up by: `host` on port 22, `[host]:port` otherwise. */
export function knownHostsName(host: string, port: number): string {
  const bare = host.replace(/^\[(.*)\]$/, '$1')
  return port === 22 ? bare : `[${bare}]:${port}`
}

function globToRegExp(glob: string): RegExp {
  const body = glob
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.')
  return new RegExp(`^${body}$`, 'i')
}

function matchesHashed(pattern: string, name: string): boolean {
  const parts = pattern.split('|') // ['', '1', salt, hash]
  if (parts.length !== 4 || parts[1] !== '1') return false
  const salt = Buffer.from(parts[2], 'base64')
  const hash = createHmac('sha1', salt).update(name).digest('base64')
  return hash === parts[3]
}

/** Whether a line's comma-separated patterns select `name` (a negated match vetoes the line). */
export function patternsMatch(patterns: string, name: string): boolean {
  if (patterns.startsWith('|')) return matchesHashed(patterns, name)
  let matched = false
  for (const p of patterns.split(',')) {
    const negated = p.startsWith('!')
    const pat = negated ? p.slice(1) : p
    if (globToRegExp(pat).test(name)) {
      if (negated) return false
      matched = true
    }
  }
  return matched
}

/** SHA256 fingerprint as OpenSSH prints it: "SHA256:" + unpadded base64. */
export function fingerprint(key: Buffer): string {
  return 'SHA256:' + createHash('sha256').update(key).digest('base64').replace(/=+$/, '')
}

/** Host key algorithms (as negotiated in SSH) that can prove possession of a known_hosts key type. */
export function algorithmsForKeyType(keyType: string): string[] {
  return keyType === 'ssh-rsa' ? ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'] : [keyType]
}

export type HostKeyVerdict =
  | { ok: true; line: KnownHostLine }
  | { ok: false; reason: 'revoked' | 'unknown' | 'mismatch' | 'cert-authority-only'; message: string }

export interface HostKeyPolicy {
  /** Lines that apply to this host (not revoked-only lines). */
  entries: KnownHostLine[]
  /** Host key algorithms to offer, most preferred first, so negotiation picks a key we can check. */
  algorithms: string[]
  verify(offered: Buffer): HostKeyVerdict
}

// The order ssh2 itself prefers; we keep it and only drop what known_hosts cannot verify.
const ALGORITHM_PREFERENCE = [
  'ssh-ed25519',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'rsa-sha2-512',
  'rsa-sha2-256',
  'ssh-rsa',
  'ssh-dss'
]

/** Builds the verification policy for one host from parsed known_hosts lines. */
export function hostKeyPolicy(lines: KnownHostLine[], host: string, port: number): HostKeyPolicy {
  const name = knownHostsName(host, port)
  const forHost = lines.filter(l => patternsMatch(l.patterns, name))
  const entries = forHost.filter(l => l.marker === '')
  const revoked = lines.filter(l => l.marker === '@revoked')
  const hasCa = forHost.some(l => l.marker === '@cert-authority')
  const wanted = new Set(entries.flatMap(l => algorithmsForKeyType(l.keyType)))
  const algorithms = ALGORITHM_PREFERENCE.filter(a => wanted.has(a))
  for (const a of wanted) if (!algorithms.includes(a)) algorithms.push(a)

  const verify = (offered: Buffer): HostKeyVerdict => {
    const fp = fingerprint(offered)
    const type = blobKeyType(offered) ?? 'unknown'
    const addLine = `${name} ${type} ${offered.toString('base64')}`
    if (revoked.some(l => l.key.equals(offered)))
      return {
        ok: false,
        reason: 'revoked',
        message: `${name} offered host key ${fp}, which known-hosts marks @revoked`
      }
    const line = entries.find(l => l.key.equals(offered))
    if (line) return { ok: true, line }
    if (entries.length === 0 && hasCa)
      return {
        ok: false,
        reason: 'cert-authority-only',
        message: `known-hosts has only @cert-authority lines for ${name}; host certificates are not supported (ssh2 cannot verify them). Add the host's own key: ${addLine}`
      }
    if (entries.length === 0)
      return {
        ok: false,
        reason: 'unknown',
        message: `${name} is not in known-hosts. It offered ${type} key ${fp}. If that is the right key, add this line to known-hosts: ${addLine}`
      }
    return {
      ok: false,
      reason: 'mismatch',
      message: `${name} offered ${type} key ${fp}, which does not match known-hosts (line ${entries.map(e => e.lineNumber).join(', ')}). This may be a man-in-the-middle, or the host was reinstalled. If the new key is right, replace the entry with: ${addLine}`
    }
  }
  return { entries, algorithms, verify }
}

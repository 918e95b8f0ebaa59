import { sshKeyPair } from './ssh-keys'
import { createHmac } from 'crypto'
import {
  fingerprint,
  hostKeyPolicy,
  knownHostsName,
  parseKnownHosts,
  patternsMatch
} from '../../src/ssh/known-hosts'

function publicBlob(type: 'ed25519' | 'ecdsa' | 'rsa'): Buffer {
  const kp =
    type === 'rsa'
      ? sshKeyPair('rsa', { bits: 2048 })
      : type === 'ecdsa'
        ? sshKeyPair('ecdsa', { bits: 256 })
        : sshKeyPair('ed25519')
  const [, b64] = kp.public.split(' ')
  return Buffer.from(b64, 'base64')
}
const line = (hosts: string, blob: Buffer, marker = ''): string => {
  const type = blob.subarray(4, 4 + blob.readUInt32BE(0)).toString()
  return `${marker ? marker + ' ' : ''}${hosts} ${type} ${blob.toString('base64')}`
}
function hashed(name: string): string {
  const salt = Buffer.from('0123456789abcdefghij')
  return `|1|${salt.toString('base64')}|${createHmac('sha1', salt).update(name).digest('base64')}`
}

const ed = publicBlob('ed25519')
const ec = publicBlob('ecdsa')
const rsa = publicBlob('rsa')
const other = publicBlob('ed25519')

describe('known_hosts names and patterns', () => {
  it('uses [host]:port for ports other than 22, also for IPv6', () => {
    expect(knownHostsName('pi', 22)).toBe('pi')
    expect(knownHostsName('pi', 2222)).toBe('[pi]:2222')
    expect(knownHostsName('fe80::1', 2222)).toBe('[fe80::1]:2222')
    expect(knownHostsName('[fe80::1]', 22)).toBe('fe80::1')
  })
  it('matches lists, wildcards and negations', () => {
    expect(patternsMatch('a,b,pi.lan', 'pi.lan')).toBe(true)
    expect(patternsMatch('*.lan', 'pi.lan')).toBe(true)
    expect(patternsMatch('*.lan,!pi.lan', 'pi.lan')).toBe(false)
    expect(patternsMatch('pi?', 'pi3')).toBe(true)
    expect(patternsMatch('10.0.0.*', '10.0.0.12')).toBe(true)
    expect(patternsMatch('10.0.0.1', '10.0.0.12')).toBe(false)
    expect(patternsMatch('[pi]:2222', '[pi]:2222')).toBe(true)
    expect(patternsMatch('pi', '[pi]:2222')).toBe(false)
  })
  it("matches hashed names (HMAC-SHA1 with the line's salt)", () => {
    expect(patternsMatch(hashed('pi.lan'), 'pi.lan')).toBe(true)
    expect(patternsMatch(hashed('[pi.lan]:2222'), '[pi.lan]:2222')).toBe(true)
    expect(patternsMatch(hashed('pi.lan'), 'other')).toBe(false)
  })
})

describe('parseKnownHosts', () => {
  it('reads markers, comments, blank lines; reports malformed lines with their numbers', () => {
    const text = [
      '# comment',
      '',
      line('pi', ed),
      line('pi', rsa, '@revoked'),
      'garbage',
      `pi ssh-ed25519 AAAAC3NzaC1yc2EAAAADAQABAAABAQ`,
      '@weird pi x y'
    ].join('\n')
    const r = parseKnownHosts(text)
    expect(r.lines.map(l => [l.lineNumber, l.marker, l.keyType])).toEqual([
      [3, '', 'ssh-ed25519'],
      [4, '@revoked', 'ssh-rsa']
    ])
    expect(r.errors).toEqual([
      expect.stringMatching(/^known-hosts line 5:/),
      expect.stringMatching(/^known-hosts line 6: the key is not a valid ssh-ed25519/),
      expect.stringMatching(/^known-hosts line 7: unknown marker @weird/)
    ])
  })
})

describe('hostKeyPolicy', () => {
  const parse = (...lines: string[]) => parseKnownHosts(lines.join('\n')).lines

  it('accepts the listed key and refuses another with the fingerprint and the line to add', () => {
    const p = hostKeyPolicy(parse(line('pi', ed)), 'pi', 22)
    expect(p.verify(ed).ok).toBe(true)
    const v = p.verify(other)
    expect(v.ok).toBe(false)
    if (!v.ok) {
      expect(v.reason).toBe('mismatch')
      expect(v.message).toContain(fingerprint(other))
      expect(v.message).toContain(`pi ssh-ed25519 ${other.toString('base64')}`)
    }
  })
  it('an unknown host gets the line to add, with [host]:port', () => {
    const v = hostKeyPolicy(parse(line('pi', ed)), 'nas', 2222).verify(other)
    expect(v.ok).toBe(false)
    if (!v.ok) {
      expect(v.reason).toBe('unknown')
      expect(v.message).toContain(`[nas]:2222 ssh-ed25519 ${other.toString('base64')}`)
    }
  })
  it('several keys for one host: any listed type matches, and only those algorithms are offered', () => {
    const p = hostKeyPolicy(parse(line('pi', rsa), line('pi', ec)), 'pi', 22)
    expect(p.verify(rsa).ok).toBe(true)
    expect(p.verify(ec).ok).toBe(true)
    expect(p.verify(ed).ok).toBe(false)
    expect(p.algorithms).toEqual(['ecdsa-sha2-nistp256', 'rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'])
  })
  it('@revoked wins over a matching line, whatever host it names', () => {
    const p = hostKeyPolicy(parse(line('pi', ed), line('*', ed, '@revoked')), 'pi', 22)
    const v = p.verify(ed)
    expect(v.ok).toBe(false)
    if (!v.ok) expect(v.reason).toBe('revoked')
  })
  it('@cert-authority alone is refused clearly (no certificate support)', () => {
    const v = hostKeyPolicy(parse(line('*.lan', ed, '@cert-authority')), 'pi.lan', 22).verify(other)
    expect(v.ok).toBe(false)
    if (!v.ok) expect(v.reason).toBe('cert-authority-only')
  })
  it('matches hashed entries and IPv6 with a port', () => {
    const p = hostKeyPolicy(parse(line(hashed('[fe80::1]:2222'), ed)), 'fe80::1', 2222)
    expect(p.verify(ed).ok).toBe(true)
  })
  it('fingerprints like ssh-keygen -l (SHA256, unpadded base64)', () => {
    expect(fingerprint(Buffer.from('abc'))).toBe('SHA256:ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0')
  })
})

describe('agreement with OpenSSH', () => {
  const { execFileSync } = require('child_process') as typeof import('child_process')
  const fs = require('fs') as typeof import('fs')
  const os = require('os') as typeof import('os')
  const path = require('path') as typeof import('path')
  let hasKeygen = true
  try {
    execFileSync('ssh-keygen', ['-?'], { stdio: 'ignore' })
  } catch (e) {
    hasKeygen = (e as { status?: number }).status !== undefined && (e as { code?: string }).code !== 'ENOENT'
  }
  const maybe = hasKeygen ? it : it.skip

  maybe('computes the same fingerprint as ssh-keygen -l and matches names hashed by ssh-keygen -H', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kh-'))
    const kh = path.join(dir, 'known_hosts')
    fs.writeFileSync(kh, [line('pi.lan', ed), line('[nas]:2222', rsa)].join('\n') + '\n')
    const keygen = execFileSync('ssh-keygen', ['-l', '-f', kh]).toString()
    expect(keygen).toContain(fingerprint(ed))
    expect(keygen).toContain(fingerprint(rsa))
    execFileSync('ssh-keygen', ['-H', '-f', kh], { stdio: 'ignore' })
    const hashedLines = parseKnownHosts(fs.readFileSync(kh, 'utf8')).lines
    expect(hashedLines.every(l => l.patterns.startsWith('|1|'))).toBe(true)
    expect(hostKeyPolicy(hashedLines, 'pi.lan', 22).verify(ed).ok).toBe(true)
    expect(hostKeyPolicy(hashedLines, 'nas', 2222).verify(rsa).ok).toBe(true)
    expect(hostKeyPolicy(hashedLines, 'nas', 22).verify(rsa).ok).toBe(false)
    fs.rmSync(dir, { recursive: true })
  })
})

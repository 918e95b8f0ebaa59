import { execFileSync } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { parseSigningKey, SigningKey } from '../../src/cache/signing'
import { unverifiedRestoreRefused } from '../../src/cache/store-cache'
import { runCommand } from '../../src/run-command'
import { base, inputs } from './read-inputs'

// A key pair as nix-store --generate-binary-cache-key wrote it (Nix 2.8); the public half is its file.
const SECRET =
  'test-1:WCnin4rkjEK4VeBngQKzCRwMQkLxXAcJiQpxCmKP+SstWg+dIzjtuQD3U9ZIB6TApoCNLMSYVQQVOPJzPelVHA=='
const PUBLIC = 'test-1:LVoPnSM47bkA91PWSAekwKaAjSzEmFUEFTjycz3pVRw='

const hasNix = (() => {
  try {
    execFileSync('nix-store', ['--version'], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
})()

describe('signing-key', () => {
  it('derives the public key Nix derives, and a fingerprint of it', () => {
    const k = parseSigningKey(`  ${SECRET}\n`) as SigningKey
    expect(k.publicKey).toBe(PUBLIC)
    expect(k.name).toBe('test-1')
    expect(k.secret).toBe(SECRET)
    expect(k.fingerprint).toMatch(/^[0-9a-f]{12}$/)
  })
  ;(hasNix ? it : it.skip)('agrees with nix-store --generate-binary-cache-key on a fresh key', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-key-'))
    try {
      execFileSync('nix-store', ['--generate-binary-cache-key', 'fresh-1', `${dir}/sk`, `${dir}/pk`])
      const k = parseSigningKey(fs.readFileSync(`${dir}/sk`, 'utf8')) as SigningKey
      expect(k.publicKey).toBe(fs.readFileSync(`${dir}/pk`, 'utf8').trim())
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  it('refuses what is not a whole secret key, without quoting it', () => {
    const bytes = Buffer.from(SECRET.split(':')[1], 'base64')
    bytes[40] ^= 1
    const edited = `test-1:${bytes.toString('base64')}`
    for (const [text, why] of [
      [PUBLIC, /32 bytes after base64, not 64 \(is it the public key\?\)/],
      [edited, /public half does not match its seed/],
      ['no colon here', /not a Nix secret signing key \(NAME:BASE64/],
      ['a b:AAAA', /not a Nix secret signing key/]
    ] as const) {
      const problem = parseSigningKey(text)
      expect(problem).toMatch(why)
      expect(problem).not.toContain(text.split(':')[1] ?? text)
    }
    expect(() => inputs({ ...base, 'signing-key': edited })).toThrow(
      /signing-key: not a Nix secret signing key/
    )
    expect(inputs({ ...base, 'signing-key': SECRET }).signingKey?.publicKey).toBe(PUBLIC)
    expect(inputs(base).signingKey).toBeUndefined()
  })

  it('lets only a build on a GitHub-hosted runner restore an unsigned cache', () => {
    const key = parseSigningKey(SECRET) as SigningKey
    const hosted = { RUNNER_ENVIRONMENT: 'github-hosted' }
    expect(unverifiedRestoreRefused({ mode: 'build' }, hosted)).toBeUndefined()
    expect(unverifiedRestoreRefused({ mode: 'build' }, { RUNNER_ENVIRONMENT: 'self-hosted' })).toMatch(
      /only a GitHub-hosted runner restores/
    )
    expect(unverifiedRestoreRefused({ mode: 'build' }, {})).toMatch(/only a GitHub-hosted runner restores/)
    expect(unverifiedRestoreRefused({ mode: 'build', signingKey: key }, {})).toBeUndefined()
    for (const mode of ['switch', 'boot', 'test', 'dry-activate'] as const) {
      expect(unverifiedRestoreRefused({ mode }, hosted)).toMatch(
        /a deploy imports only entries signed by signing-key/
      )
      expect(unverifiedRestoreRefused({ mode, signingKey: key }, {})).toBeUndefined()
    }
  })

  it('hands a secret file to a command on /dev/fd/3 (a pipe), in neither its argv nor its environment', async () => {
    const r = await runCommand(
      'sh',
      [
        '-c',
        'printf "fd3=%s\\n" "$(cat /dev/fd/3)"; echo "conf=${NIX_USER_CONF_FILES-unset}"; ' +
          'tr "\\0" "\\n" < /proc/$$/environ | grep -c WCnin4""rk; tr "\\0" " " < /proc/$$/cmdline | grep -c WCnin4""rk; true'
      ],
      { secretFile: SECRET }
    )
    expect(r.stdout.trim().split('\n')).toEqual([`fd3=${SECRET}`, 'conf=unset', '0', '0'])
    await expect(runCommand('true', [], { secretFile: 'a', secretNixConfig: 'b' })).rejects.toThrow(/both/)
  })
})

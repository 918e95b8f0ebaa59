import { execFileSync } from 'child_process'
import { ownerDescription } from '../../src/deploy/lock'
import { LOCK_SCRIPT, parseLockAnswer } from '../../src/target/lock'
import { agentCommandOptions, parseAgentState } from '../../src/target/parse'
import { checkSpace, checkTarget, SPACE_MARGIN_BYTES } from '../../src/deploy/preflight'
import { RemoteState } from '../../src/target/remote-state'
import { ALL_SCRIPTS, AGENT_OUTCOMES, DECIDE_SCRIPT } from '../../src/target/scripts'
import { SCRIPT_FILES } from '../../src/target/scripts.generated'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'

describe('scripts run on the target', () => {
  it.each(Object.entries(ALL_SCRIPTS))('%s is valid POSIX sh (sh -n)', (_name, script) => {
    execFileSync('sh', ['-n', '-c', script])
  })
  it('are embedded as they are in src/target/scripts (npm run build regenerates them)', () => {
    const { generate, out } = require('../../scripts/embed-scripts.js')
    expect(fs.readFileSync(out, 'utf8')).toBe(generate())
  })
  it("the agent's outcomes are the ones the action knows, and no other", () => {
    const code = SCRIPT_FILES['agent.sh']
      .split('\n')
      .filter(l => !/^\s*#/.test(l))
      .join('\n')
    const finishes = [...code.matchAll(/\bfinish '?([a-z-]+)'?\s*(?:;|$)/gm)].map(m => m[1])
    expect(new Set(finishes)).toEqual(new Set(AGENT_OUTCOMES))
  })
  it("the agent's options are named, and a value can never be read as an option", () => {
    const before: RemoteState = {
      current: '/nix/store/' + 'c'.repeat(32) + '-old',
      profile: '/nix/store/' + 'c'.repeat(32) + '-old',
      profileLink: 'system-7-link',
      hasNixStore: true
    }
    const opts = agentCommandOptions({
      dir: '/run/nix-deploy-action/x',
      toplevel: '/nix/store/' + 'a'.repeat(32) + '-new',
      action: 'switch',
      activationTimeoutSeconds: 600,
      waitSeconds: 30,
      onTimeout: 'rollback',
      before,
      lock: { dir: '/nix/var/nix-deploy-action/lock', id: 'abc', leaseSeconds: 90, description: 'd' }
    })
    const pairs = Object.fromEntries(
      Array.from({ length: opts.length / 2 }, (_, i) => [opts[2 * i], opts[2 * i + 1]])
    )
    expect(pairs).toEqual({
      '--dir': '/run/nix-deploy-action/x',
      '--toplevel': '/nix/store/' + 'a'.repeat(32) + '-new',
      '--action': 'switch',
      '--activation-timeout': '600',
      '--wait-seconds': '30',
      '--on-timeout': 'rollback',
      '--prev-current': before.current,
      '--prev-profile': before.profile,
      '--prev-generation': '7',
      '--lock-dir': '/nix/var/nix-deploy-action/lock',
      '--lock-id': 'abc',
      '--lease': '90'
    })
    // Every option the action passes is one the agent parses.
    for (const name of Object.keys(pairs)) expect(SCRIPT_FILES['agent.sh']).toContain(`    ${name})`)
  })
})

describe('the lock script, run for real against a temporary directory', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-lock-'))
  const lock = path.join(dir, 'lock')
  const owner = path.join(lock, 'owner')
  const lockOp = (verb: string, id: string, lease = 600, desc = `run ${id}`): string =>
    execFileSync('sh', ['-c', LOCK_SCRIPT, 'sh', verb, lock, id, String(lease), desc], { encoding: 'utf8' })
  const take = (id: string, lease = 600, desc?: string) => lockOp('acquire', id, lease, desc)
  const uptime = (): number => Math.floor(Number(fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0]))
  const bootId = (): string => fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
  const plant = (lines: string[]): void => {
    fs.mkdirSync(lock, { recursive: true })
    fs.writeFileSync(owner, lines.join('\n') + '\n')
  }
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

  it("gives the lock to one run, tells the next who holds it (seconds left by the target's clock), lets the holder renew", () => {
    expect(parseLockAnswer(take('a'))).toEqual({ acquired: true })
    const held = parseLockAnswer(take('b'))
    expect(held).toEqual({
      acquired: false,
      holder: { id: 'a', secondsLeft: expect.any(Number), description: 'run a' }
    })
    expect(!held.acquired && held.holder.secondsLeft).toBeGreaterThan(590)
    expect(parseLockAnswer(take('a'))).toEqual({ acquired: true })
    expect(lockOp('renew', 'a').trim()).toBe('renewed')
    expect(lockOp('renew', 'b').trim()).toBe('lost')
  })
  it("keeps the lease in the target's uptime and boot id, never in a wall clock", () => {
    const [id, lease, desc] = fs.readFileSync(owner, 'utf8').split('\n')
    expect(id).toBe('a')
    const [v, boot, expiry] = lease.split(' ')
    expect([v, boot]).toEqual(['v2', bootId()])
    expect(Number(expiry) - uptime()).toBeGreaterThan(590)
    expect(Number(expiry) - uptime()).toBeLessThanOrEqual(600)
    expect(desc).toBe('run a')
  })
  it('only the holder can release', () => {
    expect(lockOp('release', 'b').trim()).toBe('not-held')
    expect(fs.existsSync(owner)).toBe(true)
    expect(lockOp('release', 'a').trim()).toBe('released')
    expect(fs.existsSync(owner)).toBe(false)
  })
  it("takes over a lease that ran out, one from another boot, and an older action's expired one", () => {
    plant(['crashed', `v2 ${bootId()} ${uptime() - 5}`, 'a run that died'])
    expect(take('c').trim()).toBe('acquired')
    // A lock whose lease is far in the future, but from before a reboot: uptime restarted, so stale.
    plant(['before-reboot', `v2 00000000-0000-0000-0000-000000000000 ${uptime() + 100000}`, 'x'])
    expect(take('d').trim()).toBe('acquired')
    // An older action's owner file: epoch expiry on line 2, honoured by the wall clock it names.
    plant(['old', String(Math.floor(Date.now() / 1000) - 5), 'old'])
    expect(take('e').trim()).toBe('acquired')
    plant(['old-live', String(Math.floor(Date.now() / 1000) + 300), 'old live'])
    expect(parseLockAnswer(take('f')).acquired).toBe(false)
  })
  it('a renewal after another run took the lock over says lost, and cannot take it back', () => {
    plant(['slow', `v2 ${bootId()} ${uptime() - 1}`, 'slow'])
    expect(take('fast').trim()).toBe('acquired')
    expect(lockOp('renew', 'slow').trim()).toBe('lost')
    expect(lockOp('release', 'slow').trim()).toBe('not-held')
    expect(fs.readFileSync(owner, 'utf8').split('\n')[0]).toBe('fast')
  })
  it('many runs racing for an expired lock: exactly one takes it, every round', async () => {
    const { spawn } = require('child_process') as typeof import('child_process')
    const attempt = (id: string): Promise<string> =>
      new Promise(resolve => {
        const c = spawn('sh', ['-c', LOCK_SCRIPT, 'sh', 'acquire', lock, id, '600', id])
        let out = ''
        c.stdout.on('data', (d: Buffer) => (out += d.toString()))
        c.on('close', () => resolve(out.trim().split('\n')[0]))
      })
    for (let round = 0; round < 10; round++) {
      plant(['dead', `v2 ${bootId()} ${uptime() - 10}`, 'dead'])
      const answers = await Promise.all(Array.from({ length: 8 }, (_, i) => attempt(`r${round}-${i}`)))
      expect(answers.filter(a => a === 'acquired')).toHaveLength(1)
      expect(answers.filter(a => a === 'held')).toHaveLength(7)
      const winner = answers.findIndex(a => a === 'acquired')
      expect(fs.readFileSync(owner, 'utf8').split('\n')[0]).toBe(`r${round}-${winner}`)
    }
  }, 60_000)
  it('treats a hostile description as text', () => {
    lockOp('release', 'fast')
    fs.rmSync(lock, { recursive: true, force: true })
    const desc = '$(touch /tmp/nda-pwned) `id` ; rm -rf /'
    take('g', 600, desc)
    const answer = parseLockAnswer(take('h'))
    expect(!answer.acquired && answer.holder.description).toBe(desc)
    expect(fs.existsSync('/tmp/nda-pwned')).toBe(false)
  })
  it('describes the run without newlines', () => {
    expect(
      ownerDescription({ GITHUB_REPOSITORY: 'me/pi', GITHUB_RUN_ID: '42', GITHUB_WORKFLOW: 'deploy\nx' })
    ).toMatch(/^nix-deploy-action https:\/\/github.com\/me\/pi\/actions\/runs\/42 \(deploy x, started /)
  })
})

describe('the decide script: exactly one decision counts', () => {
  it('the first decision wins, the second learns it', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-decide-'))
    const decide = (d: string) =>
      execFileSync('sh', ['-c', DECIDE_SCRIPT, 'sh', dir, d], { encoding: 'utf8' }).trim()
    expect(decide('confirm')).toBe('won')
    expect(decide('abort')).toBe('lost:confirm')
    fs.rmSync(dir, { recursive: true })
  })
})

describe('agent state', () => {
  it("parses the follow script's key=value lines", () => {
    expect(parseAgentState('size=120\nstatus=0\ngeneration=7\noutcome=\nsh: 1: cannot open\n')).toEqual({
      size: 120,
      status: 0,
      generation: 7,
      outcome: undefined
    })
    expect(parseAgentState('size=5\nstatus=\ngeneration=\noutcome=rolled-back\n')).toEqual({
      size: 5,
      status: undefined,
      generation: undefined,
      outcome: 'rolled-back'
    })
  })
})

describe('preflight', () => {
  const S = '/nix/store/' + 'a'.repeat(32) + '-nixos-system'
  const ok: RemoteState = {
    current: S,
    profile: S,
    platform: 'aarch64-linux',
    uid: 0,
    hasNixStore: true,
    nixFreeBytes: 1e9
  }
  it('accepts a NixOS target of the right platform', () => {
    expect(() => checkTarget(ok, 'pi', 'aarch64-linux')).not.toThrow()
  })
  it('refuses a platform mismatch, a non-NixOS target, a target without Nix', () => {
    expect(() => checkTarget(ok, 'pi', 'x86_64-linux')).toThrow(
      /configuration is for x86_64-linux but pi runs aarch64-linux/
    )
    expect(() =>
      checkTarget({ ...ok, current: undefined, platform: undefined }, 'pi', 'aarch64-linux')
    ).toThrow(/does not run a NixOS system/)
    expect(() => checkTarget({ ...ok, hasNixStore: false }, 'pi', 'aarch64-linux')).toThrow(/no nix-store/)
  })
  it('refuses a copy that does not fit with margin, accepts one that does', () => {
    const free = 100 * 1024 * 1024
    expect(() => checkSpace({ ...ok, nixFreeBytes: free }, 'pi', 30 * 1024 * 1024)).not.toThrow()
    expect(() => checkSpace({ ...ok, nixFreeBytes: free }, 'pi', free - SPACE_MARGIN_BYTES)).toThrow(
      /has 100.0 MiB free on \/nix but the copy needs about/
    )
    expect(() => checkSpace({ ...ok, nixFreeBytes: 0 }, 'pi', 0)).not.toThrow()
  })
})

describe('compression choice', () => {
  const { chooseCodec } =
    require('../../src/deploy/compression') as typeof import('../../src/deploy/compression')
  const all = () => true
  it('auto prefers zstd, then gzip, then none, by what both sides have', () => {
    expect(chooseCodec('auto', all, new Set(['zstd', 'xz', 'gzip'])).codec.name).toBe('zstd')
    expect(chooseCodec('auto', all, new Set(['xz', 'gzip'])).codec.name).toBe('gzip')
    expect(chooseCodec('auto', t => t !== 'zstd', new Set(['zstd', 'gzip'])).codec.name).toBe('gzip')
    expect(chooseCodec('auto', all, new Set()).codec.name).toBe('none')
  })
  it('honours an explicit codec, or says why it fell back', () => {
    expect(chooseCodec('xz', all, new Set(['xz'])).codec.name).toBe('xz')
    expect(chooseCodec('none', all, new Set(['zstd'])).codec.name).toBe('none')
    const r = chooseCodec('xz', all, new Set(['zstd']))
    expect(r.codec.name).toBe('zstd')
    expect(r.note).toMatch(/xz is not available on the target; using zstd/)
  })
})

describe('ciphers', () => {
  it('never offers chacha20-poly1305 (ssh2 pure-JS corrupts it through a jump host)', () => {
    const { NEVER_OFFERED_CIPHERS } =
      require('../../src/ssh/connection') as typeof import('../../src/ssh/connection')
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

describe('what a deploy leaves and keeps on the target is bounded and its own', () => {
  const { gcRootPath } = require('../../src/deploy/copy') as typeof import('../../src/deploy/copy')
  it('GC roots are per store path (hash included) and per run: no two deploys share one', () => {
    const a = '/nix/store/' + 'a'.repeat(32) + '-nixos-system-pi3-24.05'
    const b = '/nix/store/' + 'b'.repeat(32) + '-nixos-system-pi3-24.05'
    expect(gcRootPath(a, 'run1')).not.toBe(gcRootPath(b, 'run1'))
    expect(gcRootPath(a, 'run1')).not.toBe(gcRootPath(a, 'run2'))
    expect(gcRootPath(a, 'run1')).toBe(`/nix/var/nix/gcroots/nix-deploy-action/${a.slice(11)}.run1`)
  })
  it('one follow poll returns at most its limit of the agent log, and says how much there is', () => {
    const { FOLLOW_SCRIPT } = require('../../src/target/scripts') as typeof import('../../src/target/scripts')
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-follow-'))
    fs.writeFileSync(path.join(dir, 'log'), 'x'.repeat(100_000))
    const r = require('child_process').spawnSync('sh', ['-c', FOLLOW_SCRIPT, 'sh', dir, '10', '4096'], {
      encoding: 'utf8'
    })
    expect(r.stdout.length).toBe(4096)
    expect(r.stderr).toMatch(/^size=100000$/m)
    fs.rmSync(dir, { recursive: true, force: true })
  })
})

import { execFileSync, spawnSync } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { ActionError } from '../../src/errors'
import { PathInfo } from '../../src/nix/closure'
import { plainLog } from '../../src/log/untrusted'
import type { ExecOptions, RemoteHost, RemoteResult } from '../../src/ssh/connection'
import { KEPT_SCRIPTS_DIR } from '../../src/target/kept-scripts'
import { closureByReference, parseSurvey, readByReference } from '../../src/target/survey'
import { SURVEY_SCRIPT } from '../../src/target/scripts'
import { TargetSession } from '../../src/target/session'
import { SshTarget } from '../../src/target/ssh-target'
import { CopyPlan, Survey, SurveyRequest } from '../../src/target/target'

/**
 * SURVEY_SCRIPT's shell logic run for real by sh, with a stand-in
 * `nix-store` on PATH (the e2e tests run them against real Nix on the simulated Pi with every
 * deploy); the survey's answer read by parseSurvey.
 */
const P = (name: string, c = 'a'): string => `/nix/store/${c.repeat(32)}-${name}`
const running = [P('glibc-2.37', 'g'), P('hello-2.12', 'h')]
const toplevel = P('nixos-system-pi-24.05', 's')
const closure: PathInfo[] = [
  { path: P('hello-2.12', 'h'), narSize: 100, references: [] },
  { path: P('htop-3.3.0', 'j'), narSize: 200, references: [] },
  { path: toplevel, narSize: 300, references: [P('hello-2.12', 'h'), P('htop-3.3.0', 'j')] }
]

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-survey-'))
const bin = path.join(dir, 'bin')
fs.mkdirSync(bin)
// The stand-in: -qR lists the toplevel's closure (CLOSURE), or else `running` (or fails with
// FAIL_LISTING), -q --size prints a size per path, --check-validity --print-invalid prints the
// arguments not in VALID (or fails with FAIL_QUERY), --check-validity alone fails for one not in
// VALID. `nix path-info` (the closure from the cache) prints CACHE_CLOSURE, or fails without it.
fs.writeFileSync(
  path.join(bin, 'nix-store'),
  `#!/bin/sh
case "$1" in
  -qR) [ "$2" != "${toplevel}" ] || { printf '%s\\n' $CLOSURE; exit 0; }
    [ -z "$FAIL_LISTING" ] || { echo "error: listing refused" >&2; exit 1; }; printf '%s\\n' ${running.join(' ')} ;;
  -q) shift 2; for p in "$@"; do echo 1000; done ;;
  --check-validity) [ "$2" = --print-invalid ] || { case " $VALID " in *" $2 "*) exit 0 ;; *) exit 1 ;; esac; }
    shift 2; [ -z "$FAIL_QUERY" ] || { echo "error: database is locked" >&2; exit 1; }
    for p in "$@"; do case " $VALID " in *" $p "*) ;; *) echo "$p" ;; esac; done ;;
esac
`,
  { mode: 0o755 }
)
fs.writeFileSync(
  path.join(bin, 'nix'),
  `#!/bin/sh
echo "$*" >>"${path.join(dir, 'nix-calls')}"
echo "warning: unknown setting 'stalled-download-timeout'" >&2
[ -n "$CACHE_CLOSURE" ] || { echo "error: \${CACHE_ERROR:-unable to download}" >&2; exit 1; }
printf '%s\\n' $CACHE_CLOSURE
`,
  { mode: 0o755 }
)
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

const stubEnv = (env: Record<string, string>): NodeJS.ProcessEnv => ({
  ...process.env,
  PATH: `${bin}:${process.env.PATH}`,
  VALID: P('hello-2.12', 'h'),
  ...env
})

const lockDir = path.join(dir, 'var', 'lock')
function survey(
  env: Record<string, string> = {},
  gcRoot = path.join(dir, 'gcroots', 'nda', 'system.run1'),
  opts: {
    unchangedWhen?: string
    release?: string
    lockId?: string
    top?: string
    cache?: string
    input?: string
  } = {}
) {
  const r = spawnSync(
    'sh',
    [
      '-c',
      SURVEY_SCRIPT,
      'sh',
      gcRoot,
      opts.top ?? toplevel,
      opts.unchangedWhen ?? 'switch',
      opts.release ?? 'yes',
      '1440',
      ...(opts.lockId ? [lockDir, opts.lockId, '600', `run ${opts.lockId}`] : ['', '', '', '']),
      ...(opts.cache ? [opts.cache] : [])
    ],
    // By reference, nothing on stdin: what the script read would be lost.
    {
      input: opts.input ?? (opts.cache ? '' : closure.map(p => p.path).join('\n') + '\n'),
      encoding: 'utf8',
      env: stubEnv(env)
    }
  )
  return { exitCode: r.status ?? -1, stdout: r.stdout, stderr: r.stderr }
}
const changed = (s: Survey) => {
  if (s.kind !== 'changed') throw new Error(`survey says ${s.kind}`)
  return s
}

describe('the survey of the target (one command before the copy)', () => {
  it('answers state and what to copy (dependencies first); pins the system', () => {
    const r = survey()
    expect(r.exitCode).toBe(0)
    const s = changed(parseSurvey(r, 'pi', closure))
    expect(s.state.uid).toBe(process.getuid!())
    expect(s.state.hasNixStore).toBe(true)
    const copy = s.copy as CopyPlan
    expect(copy.toCopy.map(p => p.path)).toEqual([P('htop-3.3.0', 'j'), toplevel])
    expect(copy.targetCodecs.has('gzip')).toBe(fs.existsSync('/bin/gzip') || fs.existsSync('/usr/bin/gzip'))
    expect(fs.readlinkSync(path.join(dir, 'gcroots', 'nda', 'system.run1'))).toBe(toplevel)
  })

  it('answers what it runs as it differs from the new closure: only those paths cross; put together whole', () => {
    const r = survey()
    // The running closure is glibc and hello; the new one hello, htop and the toplevel.
    const section = r.stdout.slice(r.stdout.indexOf('--running--'))
    // htop and the toplevel are missing (said once, above): not said again.
    expect(section.split('\n').filter(Boolean)).toEqual([
      '--running--',
      'count 2',
      `only ${P('glibc-2.37', 'g')} 1000`
    ])
    const s = changed(parseSurvey(r, 'pi', closure))
    expect(s.running).toEqual({
      entries: [
        { path: P('hello-2.12', 'h'), narSize: 100 },
        { path: P('glibc-2.37', 'g'), narSize: 1000 }
      ]
    })
    // A path the store has but the running system does not use is said: it is not in the running closure.
    const kept = survey({ VALID: `${P('hello-2.12', 'h')} ${P('htop-3.3.0', 'j')}` })
    expect(kept.stdout).toContain(`\nnew ${P('htop-3.3.0', 'j')}\n`)
    expect(changed(parseSurvey(kept, 'pi', closure)).running).toEqual(s.running)
    // A listing that fails gives no section, and no diff; the rest of the answer stands.
    const failed = survey({ FAIL_LISTING: '1' })
    expect(failed.exitCode).toBe(0)
    const f = changed(parseSurvey(failed, 'pi', closure))
    expect(f.copy).not.toBeInstanceOf(Error)
    expect(f.running).toEqual({ error: 'the target did not list its running closure' })
  })

  it("a running section that does not add up gives no diff (a target's word is checked)", () => {
    const r = survey()
    const lying = { ...r, stdout: r.stdout.replace('count 2', 'count 5') }
    expect('error' in changed(parseSurvey(lying, 'pi', closure)).running).toBe(true)
    const twice = { ...r, stdout: r.stdout + `only ${P('hello-2.12', 'h')} 7\n` }
    expect('error' in changed(parseSurvey(twice, 'pi', closure)).running).toBe(true)
    // Not a store path: no diff, whatever the count says.
    const foreign = { ...r, stdout: r.stdout.replace('count 2', 'count 3') + 'only /etc/passwd 7\n' }
    expect('error' in changed(parseSurvey(foreign, 'pi', closure)).running).toBe(true)
  })

  it('no GC root (exit 3) and a failed store query (exit 4) come back as errors, after the state', () => {
    fs.writeFileSync(path.join(dir, 'a-file'), '')
    const noRoot = survey({}, path.join(dir, 'a-file', 'sub', 'system'))
    expect(noRoot.exitCode).toBe(3)
    const s3 = changed(parseSurvey(noRoot, 'pi', closure))
    expect(s3.state.uid).toBe(process.getuid!())
    expect(s3.copy).toBeInstanceOf(ActionError)
    expect((s3.copy as ActionError).message).toMatch(/^could not create a GC root on pi: /)

    const noQuery = survey({ FAIL_QUERY: '1' })
    expect(noQuery.exitCode).toBe(4)
    const s4 = changed(parseSurvey(noQuery, 'pi', closure))
    expect((s4.copy as ActionError).message).toMatch(
      /asking pi which store paths it lacks failed: .*database is locked/
    )
  })

  it('a command that did not run at all (sudo refused, no shell) fails with what it printed', () => {
    expect(() =>
      parseSurvey({ exitCode: 1, stdout: '', stderr: 'sudo: a password is required' }, 'pi', closure)
    ).toThrow(/reading the system state of pi failed \(exit 1\): sudo: a password is required/)
  })

  it('is valid POSIX sh that a hostile argument cannot escape', () => {
    execFileSync('sh', ['-n', '-c', SURVEY_SCRIPT])
    const evil = path.join(dir, '$(touch pwned)', 'system')
    survey({}, evil)
    expect(fs.existsSync('pwned')).toBe(false)
    expect(fs.existsSync(path.join(dir, 'pwned'))).toBe(false)
  })

  it('takes the lock first: with the lock held elsewhere it answers only who holds it (no state, no GC root)', () => {
    const first = survey({}, path.join(dir, 'gcroots', 'nda', 'x.a'), { lockId: 'a' })
    expect(changed(parseSurvey(first, 'pi', closure)).state.hasNixStore).toBe(true)
    const root = path.join(dir, 'gcroots', 'nda', 'x.b')
    const second = survey({}, root, { lockId: 'b' })
    expect(second.exitCode).toBe(0)
    expect(second.stdout).not.toContain('--state--')
    const s = parseSurvey(second, 'pi', closure)
    expect(s).toEqual({
      kind: 'held',
      holder: { id: 'a', secondsLeft: expect.any(Number), description: 'run a' }
    })
    expect(fs.existsSync(root)).toBe(false)
  })

  it('an unchanged target: answered and the lock released in the same command (or kept when asked)', () => {
    // Here /run/current-system and the profile do not exist (readlink gives ''), so a toplevel of ''
    // is "already running" for the modes that compare with what runs; "never" (a dry run) never is.
    fs.rmSync(path.join(lockDir, 'owner'), { force: true })
    const none = survey({}, path.join(dir, 'gcroots', 'nda', 'y.c'), {
      lockId: 'c',
      unchangedWhen: 'never',
      top: ''
    })
    expect(none.stdout).toContain('--copy--')
    fs.rmSync(path.join(lockDir, 'owner'), { force: true })
    const same = survey({}, path.join(dir, 'gcroots', 'nda', 'y.d'), {
      lockId: 'd',
      unchangedWhen: 'test',
      top: ''
    })
    const s = parseSurvey(same, 'pi', closure)
    expect(s).toMatchObject({ kind: 'unchanged', lockReleased: true })
    expect(fs.existsSync(path.join(lockDir, 'owner'))).toBe(false)
    const kept = survey({}, path.join(dir, 'gcroots', 'nda', 'y.e'), {
      lockId: 'e',
      unchangedWhen: 'test',
      top: '',
      release: 'no'
    })
    expect(parseSurvey(kept, 'pi', closure)).toMatchObject({ kind: 'unchanged', lockReleased: false })
    expect(fs.readFileSync(path.join(lockDir, 'owner'), 'utf8').split('\n')[0]).toBe('e')
  })

  it("removes other runs' GC roots only when they are a day old", () => {
    const gc = path.join(dir, 'gcroots', 'nda')
    fs.symlinkSync(toplevel, path.join(gc, 'stale.run0'))
    fs.symlinkSync(toplevel, path.join(gc, 'fresh.run2'))
    execFileSync('touch', ['-h', '-d', '2 days ago', path.join(gc, 'stale.run0')])
    fs.rmSync(path.join(lockDir, 'owner'), { force: true })
    survey({}, path.join(gc, 'system.run3'))
    expect(
      fs.existsSync(path.join(gc, 'fresh.run2')) || fs.lstatSync(path.join(gc, 'fresh.run2')).isSymbolicLink()
    ).toBe(true)
    expect(() => fs.lstatSync(path.join(gc, 'stale.run0'))).toThrow()
    expect(fs.lstatSync(path.join(gc, 'system.run3')).isSymbolicLink()).toBe(true)
  })
})

describe('the survey with the closure by reference (a deploy plan: the target lists it from the cache)', () => {
  const cache = 'http://cache.example:8080?priority=10'
  const ref = closureByReference(closure)
  // Listed in neither order (nix path-info's, nix-store -qR's): the target sorts them itself.
  const listed = closure
    .map(p => p.path)
    .reverse()
    .join(' ')
  const byRef = (env: Record<string, string> = {}) =>
    survey({ CACHE_CLOSURE: listed, ...env }, path.join(dir, 'gcroots', 'nda', 'ref.run'), { cache })
  const read = (r: ReturnType<typeof survey>) => {
    const answer = readByReference(r, ref)
    if (!('stdout' in answer)) throw new Error(answer.why)
    return changed(parseSurvey({ ...r, stdout: answer.stdout }, 'pi', closure))
  }
  const why = (r: { exitCode: number; stdout: string }) => {
    const answer = readByReference(r, ref)
    return 'why' in answer ? answer.why : undefined
  }
  beforeEach(() => fs.rmSync(path.join(dir, 'nix-calls'), { force: true }))

  it('no path of the new closure crosses, either way; read back, the same answer as with the paths', () => {
    const r = byRef()
    expect(r.exitCode).toBe(0)
    expect(r.stdout).not.toContain(P('htop-3.3.0', 'j'))
    expect(r.stdout).not.toContain(toplevel)
    expect(r.stdout).toContain(`\nclosure 3 ${ref.digest}`)
    // It asked the cache named, for the toplevel's closure; nix's warnings are not paths.
    expect(fs.readFileSync(path.join(dir, 'nix-calls'), 'utf8')).toContain(
      `path-info --recursive --store ${cache}`
    )
    const s = read(r)
    const withPaths = changed(parseSurvey(survey(), 'pi', closure))
    expect(s.copy).toEqual(withPaths.copy)
    expect(s.running).toEqual(withPaths.running)
    expect((s.copy as CopyPlan).toCopy.map(p => p.path)).toEqual([P('htop-3.3.0', 'j'), toplevel])
    // What the store has and the running system does not: a place too.
    const kept = byRef({ VALID: `${P('hello-2.12', 'h')} ${P('htop-3.3.0', 'j')}` })
    expect(kept.stdout).toMatch(/\nnew-at [0-9]+\n/)
    expect(read(kept).running).toEqual(withPaths.running)
  })

  it('a deploy user\'s gate\'s listing (CACHE "-"): read from stdin, answered by reference; none is "closure unknown"', () => {
    const gc = path.join(dir, 'gcroots', 'nda', 'ref.gate')
    const r = survey({ CACHE_CLOSURE: '' }, gc, { cache: '-', input: listed.split(' ').join('\n') + '\n' })
    expect(fs.existsSync(path.join(dir, 'nix-calls'))).toBe(false)
    expect((read(r).copy as CopyPlan).toCopy.map(p => p.path)).toEqual([P('htop-3.3.0', 'j'), toplevel])
    const none = survey({}, gc, { cache: '-', input: '\n' })
    expect(why(none)).toMatch(/could not list the closure/)
    expect(none.stdout).toContain('\nclosure unknown\n')
    // The gate could not list it because the cache did not answer: the substitution will not ask it.
    const unanswered = survey({}, gc, { cache: 'unanswered', input: '\n' })
    expect(unanswered.stdout).toContain('\nclosure unknown unanswered\n')
    expect(readByReference(unanswered, closureByReference([]))).toMatchObject({ cacheUnanswered: true })
  })

  it('a target that has the system lists its closure from its store, without the cache', () => {
    const r = byRef({ VALID: listed, CLOSURE: listed, CACHE_CLOSURE: '' })
    expect(fs.existsSync(path.join(dir, 'nix-calls'))).toBe(false)
    expect((read(r).copy as CopyPlan).toCopy).toEqual([])
  })

  it('runs of places as FIRST-LAST, in the bytewise order of the paths; read back as the paths', () => {
    // Listed in descending order: the places are of the sorted listing, not of the order given.
    const many = Array.from({ length: 10 }, (_, i) => P(`p${i}`, String.fromCharCode(106 - i)))
    const sorted = [...many].sort()
    const valid = [sorted[3], sorted[4], sorted[6]]
    const r = survey(
      { CACHE_CLOSURE: many.join(' '), VALID: valid.join(' ') },
      path.join(dir, 'gcroots', 'nda', 'ref.many'),
      { cache }
    )
    const lines = r.stdout.split('\n').filter(l => l.startsWith('missing-at '))
    expect(lines).toEqual(['missing-at 0-2', 'missing-at 5', 'missing-at 7-9'])
    const infos = many.map(p => ({ path: p, narSize: 1, references: [] }))
    const answer = readByReference(r, closureByReference(infos))
    expect('stdout' in answer && answer.stdout.split('\n').filter(l => l.startsWith('missing '))).toEqual(
      sorted.filter(p => !valid.includes(p)).map(p => `missing ${p}`)
    )
  })

  it('a cache it cannot read, another closure, places outside it, out of order or twice: asked again with the paths', () => {
    // A cache that lacks the system (Nix: not valid) ...
    const unknown = byRef({ CACHE_CLOSURE: '', CACHE_ERROR: `path '${toplevel}' is not valid` })
    expect(unknown.exitCode).toBe(0)
    expect(unknown.stdout).toContain('\nclosure unknown\n')
    // Why, for the log: nix's last word.
    expect(unknown.stderr.trim()).toBe(`error: path '${toplevel}' is not valid`)
    expect(why(unknown)).toMatch(/could not list the closure/)
    // ... one that answered with an HTTP error (asked again: a 403 or a 5xx comes back quickly) ...
    const refused = byRef({
      CACHE_CLOSURE: '',
      CACHE_ERROR: "unable to download 'http://c/x.narinfo': HTTP error 503"
    })
    expect(refused.stdout).toContain('\nclosure unknown\n')
    // ... and one that did not answer (no connection, stalled): the substitution will not ask it.
    const unanswered = byRef({ CACHE_CLOSURE: '' })
    expect(unanswered.stdout).toContain('\nclosure unknown unanswered\n')
    expect(unanswered.stderr.trim()).toBe('error: unable to download')
    const answer = readByReference(unanswered, closureByReference([]))
    expect(answer).toEqual({
      why: 'the cache did not answer it (no connection, or nothing for 10 s)',
      cacheUnanswered: true
    })
    const other = byRef({ CACHE_CLOSURE: `${listed} ${P('extra', 'x')}` })
    expect(why(other)).toMatch(/another closure \(4 paths, where the runner listed 3/)
    const r = byRef()
    const places = (...lines: string[]) => ({
      ...r,
      stdout: r.stdout.replace(/missing-at \S+/, lines.join('\n'))
    })
    for (const bad of [
      ['missing-at 2-3'],
      ['missing-at 2-1'],
      ['missing-at 1', 'missing-at 0'],
      ['missing-at 0-1', 'missing-at 1']
    ])
      expect(why(places(...bad))).toMatch(/outside the closure, out of order or twice/)
    expect(why(places('missing-at x'))).toMatch(/not a place/)
    // Only the copy and running sections are read as places; elsewhere a line is only a line.
    const elsewhere = readByReference(
      { ...r, stdout: r.stdout.replace('--state--\n', '--state--\nmissing-at 0-2\n') },
      ref
    )
    expect('stdout' in elsewhere && elsewhere.stdout).toContain('--state--\nmissing-at 0-2\n')
    // Held or unchanged: no copy section, nothing to check.
    expect(why({ exitCode: 0, stdout: '--lock--\nheld\n' })).toBeUndefined()
  })
})

describe('SshTarget.survey: the closure by reference, asked again with the paths when that fails', () => {
  const cache = 'http://cache.example:8080'
  const req = (gcRoot: string): SurveyRequest => ({
    toplevel,
    closure,
    closureFrom: cache,
    gcRoot,
    unchangedWhen: 'switch',
    releaseIfUnchanged: true
  })
  /** A target running each command here (the stand-ins on PATH), or answering `canned` in turn; what it was sent. */
  function target(env: Record<string, string>, gated = false, canned?: Omit<RemoteResult, 'signal'>[]) {
    const kept = fs.mkdtempSync(path.join(dir, 'kept-'))
    const sent: { command: string; stdin: string }[] = []
    const host = {
      target: { label: 'target root@local', user: 'root' },
      alive: true,
      close: () => undefined,
      redialTarget: async () => undefined,
      exec: async (command: string, opts: ExecOptions = {}): Promise<RemoteResult> => {
        const stdin = typeof opts.stdin === 'string' ? opts.stdin : ''
        sent.push({ command, stdin })
        if (canned) return { ...canned.shift()!, signal: undefined }
        const r = spawnSync('sh', ['-c', command.split(KEPT_SCRIPTS_DIR).join(kept)], {
          input: stdin,
          env: stubEnv(env),
          encoding: 'utf8'
        })
        return { exitCode: r.status ?? -1, signal: undefined, stdout: r.stdout, stderr: r.stderr }
      }
    } as unknown as RemoteHost
    const session = new TargetSession(host, async () => host, plainLog)
    return { target: new SshTarget(session, gated, true), sent }
  }
  /** The target keeps the scripts already (the first command writes them): each command is sent once. */
  async function keeping(t: ReturnType<typeof target>) {
    await t.target.readState()
    t.sent.length = 0
    return t
  }
  /** What survey.sh answers by reference, listing `closure` from the cache. */
  const byReferenceAnswer = () =>
    survey({ CACHE_CLOSURE: closure.map(p => p.path).join(' ') }, path.join(dir, 'gcroots', 'nda', 'ssh.r'), {
      cache
    })
  const surveys = (sent: { command: string; stdin: string }[]) =>
    sent.filter(s => s.command.includes(cache) || s.stdin.includes(toplevel))

  it('a target that lists it: one survey, named not sent; its copy plan says so', async () => {
    const t = await keeping(target({ CACHE_CLOSURE: closure.map(p => p.path).join(' ') }))
    const s = changed(await t.target.survey(req(path.join(dir, 'gcroots', 'nda', 'ssh.a'))))
    expect(surveys(t.sent).map(x => x.stdin)).toEqual([''])
    expect(s.copy).toEqual({
      toCopy: closure.filter(p => p.path !== P('hello-2.12', 'h')),
      targetCodecs: expect.any(Set),
      listedFromCache: true
    })
  })

  it('one that cannot: asked again, under the same lock, with the paths; its copy plan says it did not list it', async () => {
    const t = await keeping(target({ CACHE_CLOSURE: '' }))
    const s = changed(await t.target.survey(req(path.join(dir, 'gcroots', 'nda', 'ssh.b'))))
    const [first, second] = surveys(t.sent)
    expect(first).toMatchObject({ stdin: '' })
    expect(first.command).toContain(cache)
    expect(second.command).not.toContain(cache)
    expect(second.stdin.split('\n').filter(Boolean).sort()).toEqual(closure.map(p => p.path).sort())
    expect((s.copy as CopyPlan).listedFromCache).toBeUndefined()
    expect((s.copy as CopyPlan).toCopy.map(p => p.path)).toEqual([P('htop-3.3.0', 'j'), toplevel])
  })

  it('a gate that could not list it is sent the paths: nine values and the closure on stdin', async () => {
    const unknown = survey({ CACHE_CLOSURE: '' }, path.join(dir, 'gcroots', 'nda', 'ssh.u'), { cache })
    const t = target({}, true, [unknown, survey()])
    const s = changed(await t.target.survey(req(path.join(dir, 'gcroots', 'nda', 'ssh.v'))))
    expect(t.sent.map(x => x.command.split(' ').length)).toEqual([2 + 10, 2 + 9])
    expect(t.sent.map(x => x.stdin.split('\n').filter(Boolean).length)).toEqual([0, closure.length])
    expect((s.copy as CopyPlan).listedFromCache).toBeUndefined()
  })

  it("a deploy user's gate is named the cache too (its survey verb's tenth value: it lists as its user)", async () => {
    const answer = byReferenceAnswer()
    const t = target({}, true, [answer])
    const s = changed(await t.target.survey(req(path.join(dir, 'gcroots', 'nda', 'ssh.c'))))
    expect(t.sent).toHaveLength(1)
    const words = t.sent[0].command.split(' ')
    expect(words.slice(0, 2)).toEqual(['nix-deploy-action-gate', 'survey'])
    expect(words).toHaveLength(2 + 10)
    expect(Buffer.from(words[11].slice(1), 'base64').toString()).toBe(cache)
    expect(t.sent[0].stdin).toBe('')
    expect((s.copy as CopyPlan).listedFromCache).toBe(true)
  })
})

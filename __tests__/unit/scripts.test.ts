import { execFileSync, spawn, spawnSync } from 'child_process'
import { AGENT_OUTCOMES } from '../../src/target/agent/outcome'
import { agentCommandOptions } from '../../src/target/agent/session'
import { RemoteState } from '../../src/target/remote-state'
import {
  ALL_SCRIPTS,
  DECIDE_SCRIPT,
  FOLLOW_SCRIPT,
  LOCK_SCRIPT,
  START_AGENT_SCRIPT,
  PLACE_AND_START_AGENT_SCRIPT,
  WRAP_UP_SCRIPT
} from '../../src/target/scripts'
import { SCRIPT_FILES, WIRE_SCRIPT_FILES } from '../../src/target/scripts.generated'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'

describe('scripts run on the target', () => {
  it.each(Object.entries(ALL_SCRIPTS))('%s is valid POSIX sh (sh -n)', (_name, script) => {
    execFileSync('sh', ['-n', '-c', script])
  })
  it('are embedded as they are in src/target/scripts (npm run build regenerates them)', async () => {
    const { generate, out } = require('../../scripts/embed-scripts.js')
    expect(fs.readFileSync(out, 'utf8')).toBe(await generate())
  })
  it('are sent minified (mvdan/sh): the same commands without comments, in fewer bytes', () => {
    for (const [name, text] of Object.entries(WIRE_SCRIPT_FILES)) {
      const raw = SCRIPT_FILES[name as keyof typeof SCRIPT_FILES]
      execFileSync('sh', ['-n', '-c', text])
      expect({ name, comment: /^\s*#/m.test(text) }).toEqual({ name, comment: false })
      expect(text.length).toBeLessThan(raw.length)
      // Every word of the code is there, in order (the comments' words are not).
      const words = (t: string) => t.match(/[A-Za-z_][A-Za-z0-9_]{3,}/g) ?? []
      const code = raw
        .split('\n')
        .filter(l => !/^\s*#/.test(l))
        .map(l => l.replace(/\s#\s.*$/, ''))
        .join('\n')
      expect({ name, words: words(text) }).toEqual({ name, words: words(code) })
    }
  })
  it('the Nix expression of classic evaluation is embedded as it is in src/nix/legacy-eval.nix', () => {
    const { generateNix, nixOut } = require('../../scripts/embed-scripts.js')
    expect(fs.readFileSync(nixOut, 'utf8')).toBe(generateNix())
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
      bootFiles: [],
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

describe('the decide script: exactly one decision counts', () => {
  it('the first decision wins, the second learns it', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-decide-'))
    const decide = (d: string) =>
      execFileSync('sh', ['-c', DECIDE_SCRIPT, 'sh', dir, d], { encoding: 'utf8' }).trim()
    expect(decide('confirm')).toBe('won')
    expect(decide('abort')).toBe('lost:confirm')
    fs.rmSync(dir, { recursive: true })
  })
  it('a decision it cannot write: "failed", and the claim given up (the agent\'s own timeout can still decide)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-decide-'))
    // Where the decision is written first, a directory: the write fails, as on a full /run.
    fs.mkdirSync(path.join(dir, 'decision.tmp'))
    const r = spawnSync('sh', ['-c', DECIDE_SCRIPT, 'sh', dir, 'confirm'], { encoding: 'utf8' })
    expect(r.stdout).toBe('failed\n')
    expect(fs.existsSync(path.join(dir, 'decided'))).toBe(false)
    fs.rmSync(dir, { recursive: true })
  })
  it("with a look: the answer's line, then a follow poll's answer from the offset, the exit status known", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-decide-'))
    fs.writeFileSync(path.join(dir, 'log'), 'old\nactivated\n')
    fs.writeFileSync(path.join(dir, 'status'), '0\n')
    // No agent here to bring the outcome: the look answers after its wait (3 tenths).
    const r = spawnSync('sh', ['-c', DECIDE_SCRIPT, 'sh', dir, 'confirm', '4', '4096', '3'], {
      encoding: 'utf8'
    })
    expect(r.status).toBe(0)
    expect(r.stdout).toBe('won\nactivated\n')
    expect(r.stderr).toMatch(/^size=14$/m)
    expect(r.stderr).toMatch(/^status=0$/m)
    expect(fs.readFileSync(path.join(dir, 'decision'), 'utf8')).toBe('confirm\n')
    fs.rmSync(dir, { recursive: true })
  })
})

describe("the wrap-up script: a deploy's last command", () => {
  const setUp = (owner: string) => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-wrap-up-'))
    const agentDir = path.join(root, 'agent')
    fs.mkdirSync(agentDir)
    fs.writeFileSync(path.join(agentDir, 'outcome'), 'confirmed\n')
    const gcRoot = path.join(root, 'gcroot')
    fs.symlinkSync('/nonexistent', gcRoot)
    const lockDir = path.join(root, 'lock', 'held')
    execFileSync('sh', ['-c', LOCK_SCRIPT, 'sh', 'acquire', lockDir, owner, '90', 'a test'])
    const wrapUp = (id: string) =>
      execFileSync('sh', ['-c', WRAP_UP_SCRIPT, 'sh', agentDir, gcRoot, lockDir, id], { encoding: 'utf8' })
    return { root, agentDir, gcRoot, lockDir, wrapUp }
  }
  it("removes the agent's directory and the GC root, prints the state, then releases this run's lock", () => {
    const t = setUp('run-1')
    const out = t.wrapUp('run-1')
    expect(out).toMatch(/^uid=\d+$/m)
    expect(out).toMatch(/^boot-id=\S+$/m)
    expect(out.trim().split('\n').pop()).toBe('lock-release=released')
    expect(fs.existsSync(t.agentDir)).toBe(false)
    expect(fs.existsSync(path.join(t.root, 'gcroot'))).toBe(false)
    expect(fs.existsSync(path.join(t.lockDir, 'owner'))).toBe(false)
    fs.rmSync(t.root, { recursive: true })
  })
  it("leaves another run's lock alone (it took it over), and says so", () => {
    const t = setUp('run-2')
    expect(t.wrapUp('run-1')).toMatch(/^lock-release=not-held$/m)
    expect(fs.readFileSync(path.join(t.lockDir, 'owner'), 'utf8').split('\n')[0]).toBe('run-2')
    fs.rmSync(t.root, { recursive: true })
  })
  it('does only what it is given: no lock, no directory, no GC root', () => {
    const t = setUp('run-3')
    const out = execFileSync('sh', ['-c', WRAP_UP_SCRIPT, 'sh', '', '', '', ''], { encoding: 'utf8' })
    expect(out).toMatch(/^uid=\d+$/m)
    expect(out).not.toMatch(/lock-release/)
    expect(fs.existsSync(t.agentDir)).toBe(true)
    expect(fs.lstatSync(t.gcRoot).isSymbolicLink()).toBe(true)
    expect(fs.readFileSync(path.join(t.lockDir, 'owner'), 'utf8').split('\n')[0]).toBe('run-3')
    fs.rmSync(t.root, { recursive: true })
  })

  /** wrap-up.sh with the deploy plan's record on stdin (or what `stdin` is), under the lock of `recordId`. */
  const wrapUpWithRecord = (
    t: ReturnType<typeof setUp>,
    recordId: string,
    release: boolean,
    stdin?: number
  ) =>
    spawnSync(
      'sh',
      [
        '-c',
        WRAP_UP_SCRIPT,
        'sh',
        t.agentDir,
        t.gcRoot,
        release ? t.lockDir : '',
        release ? recordId : '',
        t.lockDir,
        recordId
      ],
      stdin === undefined
        ? { input: RECORD, encoding: 'utf8' }
        : { stdio: [stdin, 'pipe', 'pipe'], encoding: 'utf8' }
    )
  const RECORD = 'plan=0123456789abcdef\nshard=1\nstate=deployed\nend=1\n'
  const recordFile = (t: ReturnType<typeof setUp>) => path.join(t.root, 'lock', 'plan-record')

  it("with the plan's record: writes it first, whole, under this run's lock, then releases the lock", () => {
    const t = setUp('run-4')
    const r = wrapUpWithRecord(t, 'run-4', true)
    expect(r.status).toBe(0)
    const lines = r.stdout.trim().split('\n')
    expect(lines[0]).toBe('record-write=written')
    expect(lines).toContain('lock-release=released')
    expect(fs.readFileSync(recordFile(t), 'utf8')).toBe(RECORD)
    expect((fs.statSync(recordFile(t)).mode & 0o777).toString(8)).toBe('600')
    // No temporary file left beside it.
    expect(fs.readdirSync(path.join(t.root, 'lock')).filter(f => f.startsWith('plan-record.'))).toEqual([])
    fs.rmSync(t.root, { recursive: true })
  })
  it("with the plan's record, keeping the lock (old generations still to prune): written, the lock still this run's", () => {
    const t = setUp('run-5')
    const r = wrapUpWithRecord(t, 'run-5', false)
    expect(r.stdout).toMatch(/^record-write=written$/m)
    expect(r.stdout).not.toMatch(/lock-release/)
    expect(fs.readFileSync(path.join(t.lockDir, 'owner'), 'utf8').split('\n')[0]).toBe('run-5')
    fs.rmSync(t.root, { recursive: true })
  })
  it("with the record of a run that lost the lock: nothing written over the new holder's, the rest done", () => {
    const t = setUp('run-7')
    fs.writeFileSync(recordFile(t), 'theirs\n')
    const r = wrapUpWithRecord(t, 'run-6', true)
    expect(r.stdout).toMatch(/^record-write=not-held$/m)
    expect(r.stdout).toMatch(/^lock-release=not-held$/m)
    expect(fs.readFileSync(recordFile(t), 'utf8')).toBe('theirs\n')
    expect(fs.existsSync(t.agentDir)).toBe(false)
    fs.rmSync(t.root, { recursive: true })
  })
  it("with a lock it cannot check (no flock, its file busy): the record's write fails, not taken for a lost lock", () => {
    const t = setUp('run-9')
    fs.writeFileSync(recordFile(t), 'before\n')
    // lock.sh's lock_op failing as it does without flock (exit 5), for the record's check alone.
    const parts = ['lock.sh', 'probe.sh', 'record.sh', 'wrap-up.sh'] as const
    const script = parts
      .map(f => (f === 'record.sh' ? `lock_op() { return 5; }\n${SCRIPT_FILES[f]}` : SCRIPT_FILES[f]))
      .join('\n')
    const r = spawnSync('sh', ['-c', script, 'sh', t.agentDir, t.gcRoot, '', '', t.lockDir, 'run-9'], {
      input: RECORD,
      encoding: 'utf8'
    })
    expect(r.stdout).toMatch(/^record-write=failed$/m)
    expect(fs.readFileSync(recordFile(t), 'utf8')).toBe('before\n')
    fs.rmSync(t.root, { recursive: true })
  })
  it('with a record it cannot write: says failed, leaves the old one, and still reads the state and releases the lock', () => {
    const t = setUp('run-8')
    fs.writeFileSync(recordFile(t), 'before\n')
    // Its input cannot be read (a directory): the write fails part way, as on a full disk.
    const dir = fs.openSync(t.root, 'r')
    const r = wrapUpWithRecord(t, 'run-8', true, dir)
    fs.closeSync(dir)
    expect(r.stdout).toMatch(/^record-write=failed$/m)
    expect(r.stdout).toMatch(/^uid=\d+$/m)
    expect(r.stdout).toMatch(/^lock-release=released$/m)
    expect(fs.readFileSync(recordFile(t), 'utf8')).toBe('before\n')
    expect(fs.readdirSync(path.join(t.root, 'lock')).filter(f => f.startsWith('plan-record.'))).toEqual([])
    fs.rmSync(t.root, { recursive: true })
  })
})

describe('the follow script', () => {
  it('one follow poll returns at most its limit of the agent log, and says how much there is', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-follow-'))
    fs.writeFileSync(path.join(dir, 'log'), 'x'.repeat(100_000))
    const r = spawnSync('sh', ['-c', FOLLOW_SCRIPT, 'sh', dir, '10', '4096'], {
      encoding: 'utf8'
    })
    expect(r.stdout.length).toBe(4096)
    expect(r.stderr).toMatch(/^size=100000$/m)
    fs.rmSync(dir, { recursive: true, force: true })
  })
})

describe('the follow script: waiting on the target for news', () => {
  /** Runs one follow poll (WAIT tenths) while `meanwhile` changes the agent's directory. */
  async function pollWhile(
    dir: string,
    wait: number,
    knowsStatus: boolean,
    meanwhile: () => void,
    offset = 0
  ) {
    const child = spawn('sh', [
      '-c',
      FOLLOW_SCRIPT,
      'sh',
      dir,
      String(offset),
      '4096',
      String(wait),
      knowsStatus ? '1' : '0'
    ])
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', d => (stdout += d))
    child.stderr.on('data', d => (stderr += d))
    const timer = setTimeout(meanwhile, 300)
    await new Promise(r => child.once('close', r))
    clearTimeout(timer)
    return { stdout, stderr }
  }

  it('a line logged while it waits comes back in the same poll', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-follow-wait-'))
    fs.writeFileSync(path.join(dir, 'log'), '')
    const r = await pollWhile(dir, 100, false, () => fs.appendFileSync(path.join(dir, 'log'), 'activating\n'))
    expect(r.stdout).toBe('activating\n')
    fs.rmSync(dir, { recursive: true, force: true })
  })

  it('the exit status is news unless the action has it; then the outcome is', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-follow-wait-'))
    fs.writeFileSync(path.join(dir, 'log'), '')
    const status = await pollWhile(dir, 100, false, () => fs.writeFileSync(path.join(dir, 'status'), '0\n'))
    expect(status.stderr).toMatch(/^status=0$/m)
    const outcome = await pollWhile(dir, 100, true, () =>
      fs.writeFileSync(path.join(dir, 'outcome'), 'confirmed\n')
    )
    expect(outcome.stderr).toMatch(/^outcome=confirmed$/m)
    fs.rmSync(dir, { recursive: true, force: true })
  })

  it('with nothing new it answers after its wait, saying so (no news, nothing logged)', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-follow-wait-'))
    fs.writeFileSync(path.join(dir, 'log'), 'old\n')
    fs.writeFileSync(path.join(dir, 'status'), '0\n')
    const r = await pollWhile(dir, 3, true, () => undefined, 4)
    expect(r.stdout).toBe('')
    expect(r.stderr).toMatch(/^size=4$/m)
    expect(r.stderr).toMatch(/^outcome=$/m)
    fs.rmSync(dir, { recursive: true, force: true })
  })
})

describe('the follow script: the log held a moment for the lines that follow it', () => {
  /**
   * One follow poll with nap replaced (no time passes): each nap is written down, and at the
   * naps `at` names the stand-in agent appends to its log or writes its status or outcome.
   */
  function pollWithNaps(wait: number, at: Record<number, string>, initialLog = '') {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-follow-settle-'))
    const dir = path.join(root, 'agent')
    fs.mkdirSync(dir)
    fs.writeFileSync(path.join(dir, 'log'), initialLog)
    const acts = Object.entries(at)
      .map(([n, what]) => `${n}) ${what} ;;`)
      .join(' ')
    const nap = `n=0\nnap() { n=$((n+1)); printf '%s\\n' "$1" >>"$dir/../naps"; case $n in ${acts} esac; }`
    const r = spawnSync(
      'sh',
      [
        '-c',
        `${SCRIPT_FILES['wake.sh']}\n${nap}\n${SCRIPT_FILES['follow.sh']}`,
        'sh',
        dir,
        '0',
        '4096',
        String(wait),
        '0'
      ],
      { encoding: 'utf8' }
    )
    const napsFile = path.join(root, 'naps')
    const naps = fs.existsSync(napsFile) ? fs.readFileSync(napsFile, 'utf8').trim().split('\n') : []
    fs.rmSync(root, { recursive: true, force: true })
    return { stdout: r.stdout, stderr: r.stderr, naps }
  }
  const tenths = (naps: string[]): number => naps.reduce((t, n) => t + Math.round(Number(n) * 10), 0)
  const log = (line: string) => `echo ${line} >>"$dir/log"`

  it('lines logged a moment apart come in one poll: the first, then a second more', () => {
    const r = pollWithNaps(30, { 1: log('activating'), 3: log('setting-up-etc') })
    expect(r.stdout).toBe('activating\nsetting-up-etc\n')
    // One nap before the news, then the second it is held, in two naps.
    expect(r.naps).toEqual(['0.1', '0.5', '0.5'])
  })

  it('the exit status or the outcome ends the hold at once', () => {
    const status = pollWithNaps(30, { 1: log('activating'), 2: 'echo 0 >"$dir/status"' })
    expect(status.stdout).toBe('activating\n')
    expect(status.stderr).toMatch(/^status=0$/m)
    expect(status.naps).toHaveLength(2)
    const outcome = pollWithNaps(30, { 1: log('rolling-back'), 3: 'echo rolled-back >"$dir/outcome"' })
    expect(outcome.stderr).toMatch(/^outcome=rolled-back$/m)
    expect(outcome.naps).toHaveLength(3)
  })

  it('never past the wait the action asked for', () => {
    const r = pollWithNaps(3, { 1: log('activating') })
    expect(r.stdout).toBe('activating\n')
    expect(tenths(r.naps)).toBe(3)
  })

  it('no hold for a backlog that fills a poll already', () => {
    const r = pollWithNaps(30, {}, 'x'.repeat(5000))
    expect(r.stdout.length).toBe(4096)
    expect(r.naps).toEqual([])
  })

  it('nothing new: no hold after the wait', () => {
    const r = pollWithNaps(7, {})
    expect(r.stdout).toBe('')
    expect(tenths(r.naps)).toBe(7)
  })
})

describe('wake.sh: a waiting script woken at once, and only the one meant', () => {
  const WAKE = SCRIPT_FILES['wake.sh']
  /** The shells a target's /bin/sh may be: dash (Debian), bash (NixOS's /bin/sh). */
  const shells = ['dash', 'bash'].filter(sh => spawnSync(sh, ['-c', 'true']).status === 0)
  const procState = (pid: number): string | undefined => {
    try {
      return /^\d+ \(.*\) (\S)/.exec(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'))?.[1]
    } catch {
      return undefined
    }
  }

  it.each(shells)(
    '%s: a nap of 300 s ends when woken, and its sleep with it',
    async sh => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-wake-'))
      const marker = path.join(dir, 'marker')
      // The sleeper registers, naps, then says which sleep it started: no test timing, only that it
      // came back (a lost wake-up would nap 300 s, past this test's deadline).
      const sleeper = spawn(sh, [
        '-c',
        `${WAKE}\necho $$ >"$1/pid"\nnap 300\necho "woken $nap_pid"`,
        'sh',
        dir,
        marker
      ])
      let out = ''
      sleeper.stdout.on('data', d => (out += d))
      for (let i = 0; i < 200 && !fs.existsSync(path.join(dir, 'pid')); i++)
        await new Promise(r => setTimeout(r, 25))
      // Woken until it ends: a wake-up between its sleep's start and its wait is lost (then the
      // target's scripts look a tenth of a second later), so the test does not depend on missing it.
      const closed = new Promise(r => sleeper.once('close', r))
      let ended = false
      void closed.then(() => (ended = true))
      while (!ended) {
        execFileSync(sh, ['-c', `${WAKE}\nwake "$1/pid" "$2"`, 'sh', dir, marker])
        await Promise.race([closed, new Promise(r => setTimeout(r, 100))])
      }
      const code = await closed
      expect(code).toBe(0)
      const napPid = Number(/^woken (\d+)$/m.exec(out)?.[1])
      expect(napPid).toBeGreaterThan(0)
      // The sleep it cut short was ended, not left behind for 300 s.
      for (let i = 0; i < 100 && procState(napPid) !== undefined && procState(napPid) !== 'Z'; i++)
        await new Promise(r => setTimeout(r, 25))
      expect([undefined, 'Z']).toContain(procState(napPid))
      fs.rmSync(dir, { recursive: true, force: true })
    },
    20_000
  )

  it.each(shells)(
    '%s: a pid whose process lacks the argument, has ended, or no pid at all: nothing signalled, nothing said',
    async sh => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-wake-'))
      // USR1 would end this sleep (its default action): it must survive being "woken" as another.
      const stranger = spawn('sleep', ['30'])
      fs.writeFileSync(path.join(dir, 'pid'), `${stranger.pid}\n`)
      fs.writeFileSync(path.join(dir, 'junk'), '12 34; rm -rf /\n')
      // A process that has ended (a follow poll the agent meant to wake is gone): quietly nothing.
      const ended = spawnSync('sh', ['-c', 'echo $$'], { encoding: 'utf8' }).stdout.trim()
      fs.writeFileSync(path.join(dir, 'gone'), `${ended}\n`)
      const r = spawnSync(
        sh,
        [
          '-c',
          `${WAKE}\nwake "$1/pid" "$1" && wake "$1/junk" "$1" && wake "$1/none" "$1" && wake "$1/gone" "$1" && echo ok`,
          'sh',
          dir
        ],
        { encoding: 'utf8' }
      )
      expect(r.stdout).toBe('ok\n')
      expect(r.stderr).toBe('')
      await new Promise(res => setTimeout(res, 200))
      expect(stranger.exitCode).toBeNull()
      expect(stranger.signalCode).toBeNull()
      stranger.kill()
      fs.rmSync(dir, { recursive: true, force: true })
    }
  )

  it.each(shells)(
    '%s: a waiting loop looks a tenth of a second apart for half a second, then half a second apart, its last nap ending at its limit',
    sh => {
      // The naps' lengths as nap_look asks for them (nap itself replaced: no time passes).
      const r = spawnSync(
        sh,
        [
          '-c',
          `${WAKE}\nnap() { printf '%s ' "$1"; }\n` +
            'looked=0; while [ "$looked" -lt 22 ]; do nap_look 22; done; echo "= $looked"\n' +
            'looked=0; for i in 1 2 3 4 5 6 7; do nap_look; done; echo "= $looked"',
          'sh'
        ],
        { encoding: 'utf8' }
      )
      expect(r.stderr).toBe('')
      expect(r.stdout.split('\n')).toEqual([
        '0.1 0.1 0.1 0.1 0.1 0.5 0.5 0.5 0.2 = 22',
        '0.1 0.1 0.1 0.1 0.1 0.5 0.5 = 15',
        ''
      ])
    }
  )

  it('follow.sh registers itself where the agent wakes it: its pid, with the directory as an argument', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-follow-wake-'))
    fs.writeFileSync(path.join(dir, 'log'), '')
    const child = spawn('sh', ['-c', FOLLOW_SCRIPT, 'sh', dir, '0', '4096', '600', '0'])
    for (let i = 0; i < 200 && !fs.existsSync(path.join(dir, 'follower')); i++)
      await new Promise(r => setTimeout(r, 25))
    const pid = Number(fs.readFileSync(path.join(dir, 'follower'), 'utf8'))
    expect(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')).toContain(dir)
    // The agent's wake-up after the status (the poll would also see it at its next look).
    fs.writeFileSync(path.join(dir, 'status'), '0\n')
    execFileSync('sh', ['-c', `${SCRIPT_FILES['wake.sh']}\nwake "$1/follower" "$1"`, 'sh', dir])
    let stderr = ''
    child.stderr.on('data', d => (stderr += d))
    await new Promise(r => child.once('close', r))
    expect(stderr).toMatch(/^status=0$/m)
    fs.rmSync(dir, { recursive: true, force: true })
  }, 20_000)
})

describe('the follow script: whether the agent still runs', () => {
  const agentOf = (dir: string): string =>
    /^agent=(.*)$/m.exec(
      spawnSync('sh', ['-c', FOLLOW_SCRIPT, 'sh', dir, '0', '4096'], { encoding: 'utf8' }).stderr
    )![1]

  it('alive while its process runs agent.sh of that directory; dead after; starting before its pid; gone without its directory', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-alive-'))
    expect(agentOf(dir)).toBe('starting')
    // A stand-in agent, run as the real one is (sh DIR/agent.sh ...), that writes its pid and waits.
    fs.writeFileSync(path.join(dir, 'agent.sh'), `echo $$ > ${dir}/pid\nexec sleep 30\n`)
    const child = spawn('sh', [path.join(dir, 'agent.sh'), '--dir', dir], { stdio: 'ignore' })
    for (let i = 0; i < 100 && !fs.existsSync(path.join(dir, 'pid')); i++)
      await new Promise(r => setTimeout(r, 20))
    // Once exec sleep replaced the shell, its command line no longer names agent.sh: as a killed
    // agent's pid reused by another program. (Polled: the exec takes a moment.)
    let seen = agentOf(dir)
    for (let i = 0; i < 250 && seen !== 'dead'; i++) {
      await new Promise(r => setTimeout(r, 20))
      seen = agentOf(dir)
    }
    expect(seen).toBe('dead')
    child.kill('SIGKILL')
    const live = spawn(
      'sh',
      ['-c', `echo $$ > ${dir}/pid; while :; do sleep 1; done`, 'sh', `${dir}/agent.sh`],
      {
        stdio: 'ignore'
      }
    )
    for (
      let i = 0;
      i < 100 && fs.readFileSync(path.join(dir, 'pid'), 'utf8').trim() !== String(live.pid);
      i++
    )
      await new Promise(r => setTimeout(r, 20))
    expect(agentOf(dir)).toBe('alive')
    live.kill('SIGKILL')
    await new Promise(r => live.once('exit', r))
    expect(agentOf(dir)).toBe('dead')
    fs.rmSync(dir, { recursive: true, force: true })
    expect(agentOf(dir)).toBe('gone')
  })
})

describe('the start script', () => {
  it('starts the agent at most once per directory: a retry after a lost connection starts nothing', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-start-'))
    // A stand-in agent that records each start (this machine has no systemd as PID 1: setsid path).
    fs.writeFileSync(path.join(dir, 'agent.sh'), `echo started >> ${dir}/starts\n`)
    const start = (): string =>
      spawnSync('sh', ['-c', START_AGENT_SCRIPT, 'sh', '--dir', dir, '--toplevel', '/nix/store/x'], {
        encoding: 'utf8'
      }).stdout.trim()
    const first = start()
    expect(first).toMatch(/^started-(setsid|systemd)$/)
    expect(start()).toBe('started-already')
    expect(start()).toBe('started-already')
    for (let i = 0; i < 50 && !fs.existsSync(path.join(dir, 'starts')); i++)
      await new Promise(r => setTimeout(r, 100))
    await new Promise(r => setTimeout(r, 300))
    expect(fs.readFileSync(path.join(dir, 'starts'), 'utf8')).toBe('started\n')
    fs.rmSync(dir, { recursive: true, force: true })
  })

  it('for a login that takes commands, writes the agent (stdin) first, private; the agent keeps the umask it was started with', async () => {
    const dir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'nda-place-')), 'run', 'a')
    const agent = `umask > ${dir}/../umask; echo started >> ${dir}/../starts\n`
    const start = (): ReturnType<typeof spawnSync> =>
      spawnSync(
        'sh',
        ['-c', `umask 022; exec sh -c "$0" sh "$@"`, PLACE_AND_START_AGENT_SCRIPT, '--dir', dir],
        {
          encoding: 'utf8',
          input: agent
        }
      )
    const first = start()
    expect(first.stdout.toString().trim()).toMatch(/^started-(setsid|systemd)$/)
    expect(fs.readFileSync(path.join(dir, 'agent.sh'), 'utf8')).toBe(agent)
    expect(fs.statSync(dir).mode & 0o777).toBe(0o700)
    expect(fs.statSync(path.join(dir, 'agent.sh')).mode & 0o777).toBe(0o600)
    expect(fs.existsSync(path.join(dir, 'log'))).toBe(true)
    // A retry rewrites the agent (by a rename) and starts nothing.
    expect(start().stdout.toString().trim()).toBe('started-already')
    const starts = path.join(dir, '..', 'starts')
    for (let i = 0; i < 50 && !fs.existsSync(starts); i++) await new Promise(r => setTimeout(r, 100))
    await new Promise(r => setTimeout(r, 300))
    expect(fs.readFileSync(starts, 'utf8')).toBe('started\n')
    expect(fs.readFileSync(path.join(dir, '..', 'umask'), 'utf8').trim()).toBe('0022')
    // No --dir: it says so and starts nothing.
    const none = spawnSync('sh', ['-c', PLACE_AND_START_AGENT_SCRIPT, 'sh'], {
      encoding: 'utf8',
      input: agent
    })
    expect(none.status).toBe(1)
    expect(none.stderr).toContain('could not write the activation agent')
    fs.rmSync(path.join(dir, '..', '..'), { recursive: true, force: true })
  })
})

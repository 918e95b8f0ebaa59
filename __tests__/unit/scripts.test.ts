import { execFileSync, spawn, spawnSync } from 'child_process'
import { agentCommandOptions } from '../../src/target/parse'
import { RemoteState } from '../../src/target/remote-state'
import {
  ALL_SCRIPTS,
  AGENT_OUTCOMES,
  DECIDE_SCRIPT,
  FOLLOW_SCRIPT,
  LOCK_SCRIPT,
  START_AGENT_SCRIPT,
  WRAP_UP_SCRIPT
} from '../../src/target/scripts'
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
})

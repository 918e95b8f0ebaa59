import { spawnSync } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { plainLog } from '../../src/log/untrusted'
import type { ExecOptions, RemoteHost, RemoteResult } from '../../src/ssh/connection'
import { shellCommand } from '../../src/ssh/quote'
import {
  isScriptMissing,
  keepScriptsCommand,
  KEPT_SCRIPTS_DIR,
  keptName,
  keptRunCommand,
  SCRIPT_MISSING_EXIT
} from '../../src/target/kept-scripts'
import {
  AGENT_SCRIPT,
  KEPT_FILES,
  KEPT_RUN_SCRIPT,
  partsOf,
  PLACE_AND_START_AGENT_SCRIPT,
  PROBE_SCRIPT
} from '../../src/target/scripts'
import { WIRE_SCRIPT_FILES } from '../../src/target/scripts.generated'
import { TargetSession } from '../../src/target/session'
import { SshTarget } from '../../src/target/ssh-target'

let tmp: string
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-kept-'))
})
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }))

/** Runs a command as sshd would hand it to the login shell, here; PATH as given. */
function sh(command: string, stdin = '', env: NodeJS.ProcessEnv = process.env): RemoteResult {
  const r = spawnSync('sh', ['-c', command], { input: stdin, env, encoding: 'utf8' })
  return { exitCode: r.status ?? -1, signal: undefined, stdout: r.stdout, stderr: r.stderr }
}

const sha256 = (file: string): string =>
  spawnSync('sha256sum', [file], { encoding: 'utf8' }).stdout.split(' ')[0]

/** A kept file of our own: the loader takes any text named by its hash. */
function keepOwn(dir: string, text: string): string {
  const h = require('crypto').createHash('sha256').update(text).digest('hex') as string
  fs.mkdirSync(dir, { recursive: true })
  fs.writeFileSync(path.join(dir, h), text)
  return h
}

const keptRun = (dir: string, parts: string[], input: string[], args: string[], refresh = '1'): string =>
  shellCommand(['sh', '-c', KEPT_RUN_SCRIPT, 'sh', dir, parts.join(' '), input.join(' '), refresh, ...args])

describe('kept-run.sh: a script the target keeps, checked against its name before anything runs', () => {
  it('runs the files joined, with the arguments; its stdin is the input files when named', () => {
    const dir = path.join(tmp, 'scripts')
    const a = keepOwn(dir, 'greet() { printf "%s|%s|%s\\n" "$0" "$1" "$2"; }\n')
    const b = keepOwn(dir, 'greet "$@"; cat\n')
    const input = keepOwn(dir, 'line one\nline two\n')
    expect(sh(keptRun(dir, [a, b], [], ["it's", 'a b']), 'own stdin')).toMatchObject({
      exitCode: 0,
      stdout: "sh|it's|a b\nown stdin"
    })
    // The input files replace the command's stdin (whose text is never read).
    expect(sh(keptRun(dir, [a, b], [input], ['x', 'y']), 'not this').stdout).toBe(
      'sh|x|y\nline one\nline two\n'
    )
  })

  it('runs nothing when a file is missing, changed, or named by anything but a hash: exit 97', () => {
    const dir = path.join(tmp, 'scripts')
    const marker = path.join(tmp, 'ran')
    const runs = keepOwn(dir, `touch '${marker}'\n`)
    const changed = keepOwn(dir, 'true\n')
    fs.writeFileSync(path.join(dir, changed), `touch '${marker}'\n`)
    const missingOne = '0'.repeat(64)
    for (const parts of [
      [missingOne],
      [runs, changed],
      [changed],
      ['../scripts/' + runs],
      [`${runs};touch`]
    ]) {
      const r = sh(keptRun(dir, parts, [], []))
      expect(r.exitCode).toBe(SCRIPT_MISSING_EXIT)
      expect(isScriptMissing(r)).toBe(true)
    }
    // A changed input file stops it too, before the script runs.
    expect(isScriptMissing(sh(keptRun(dir, [runs], [changed], [])))).toBe(true)
    expect(fs.existsSync(marker)).toBe(false)
    // What a login says first (sshd, sudo) does not hide it.
    expect(
      isScriptMissing({
        exitCode: 97,
        stderr: 'Could not chdir to home directory /nonexistent\nnda-script-missing\n'
      })
    ).toBe(true)
    expect(isScriptMissing({ exitCode: 97, stderr: 'nda-script-missing\nand then more\n' })).toBe(false)
    // The same script's own exit 97 is not a miss (it says nothing of the kind).
    const exits = keepOwn(dir, 'echo other >&2; exit 97\n')
    expect(isScriptMissing(sh(keptRun(dir, [exits], [], [])))).toBe(false)
  })

  it('refreshes the mtime of what it ran, in place, when asked (the prune keeps what deploys use)', () => {
    const dir = path.join(tmp, 'scripts')
    const h = keepOwn(dir, 'true\n')
    const file = path.join(dir, h)
    fs.utimesSync(file, new Date('2020-01-01'), new Date('2020-01-01'))
    const inode = fs.statSync(file).ino
    // Not asked (a visit that changes nothing): not even the file's mtime changes.
    expect(sh(keptRun(dir, [h], [], [], '0')).exitCode).toBe(0)
    expect(fs.statSync(file).mtime.getFullYear()).toBe(2020)
    expect(sh(keptRun(dir, [h], [], [])).exitCode).toBe(0)
    expect(fs.statSync(file).mtime.getFullYear()).toBeGreaterThan(2020)
    expect(fs.statSync(file).ino).toBe(inode)
  })
})

describe('keep-scripts.sh: writes each file under its hash, whole, private to root', () => {
  it('writes every kept file, each with its name as its SHA-256; the directory private', () => {
    const dir = path.join(tmp, 'var', 'scripts')
    const r = sh(keepScriptsCommand(dir))
    expect(r).toMatchObject({ exitCode: 0, stdout: 'kept\n' })
    expect(fs.readdirSync(dir).sort()).toEqual(KEPT_FILES.map(keptName).sort())
    for (const f of KEPT_FILES) {
      expect(fs.readFileSync(path.join(dir, keptName(f)), 'utf8')).toBe(WIRE_SCRIPT_FILES[f])
      expect(sha256(path.join(dir, keptName(f)))).toBe(keptName(f))
    }
    expect(fs.statSync(dir).mode & 0o777).toBe(0o700)
    expect(fs.statSync(path.join(dir, keptName(KEPT_FILES[0]))).mode & 0o777).toBe(0o600)
  })

  it('refuses a text that is not what its name says, leaving nothing; removes what went unused for 90 days', () => {
    const dir = path.join(tmp, 'scripts')
    fs.mkdirSync(dir)
    const old = path.join(dir, 'a'.repeat(64))
    const recent = path.join(dir, 'b'.repeat(64))
    for (const f of [old, recent]) fs.writeFileSync(f, 'x')
    fs.utimesSync(old, new Date(Date.now() - 91 * 86400_000), new Date(Date.now() - 91 * 86400_000))
    const wrong = shellCommand([
      'sh',
      '-c',
      WIRE_SCRIPT_FILES['keep-scripts.sh'],
      'sh',
      dir,
      'c'.repeat(64),
      'text'
    ])
    expect(sh(wrong).exitCode).toBe(1)
    expect(fs.readdirSync(dir).sort()).toEqual([path.basename(recent)])
    const notHex = shellCommand(['sh', '-c', WIRE_SCRIPT_FILES['keep-scripts.sh'], 'sh', dir, '../x', 'text'])
    expect(sh(notHex).exitCode).toBe(2)
    expect(fs.existsSync(path.join(tmp, 'x'))).toBe(false)
  })

  it('each composed script, run from the kept files, is the same program (sh -n, same text but blank lines)', () => {
    const dir = path.join(tmp, 'scripts')
    expect(sh(keepScriptsCommand(dir)).exitCode).toBe(0)
    for (const script of [PROBE_SCRIPT, AGENT_SCRIPT]) {
      const parts = partsOf(script)!
      // What kept-run.sh joins: the files one after the other (each ends in one newline), less the last.
      const text = parts
        .map(f => WIRE_SCRIPT_FILES[f])
        .join('')
        .slice(0, -1)
      const viaLoader = sh(
        shellCommand([
          'sh',
          '-c',
          KEPT_RUN_SCRIPT.replace(/exec sh -c "\$script" sh "\$@"\s*$/, 'printf %s "$script"\n'),
          'sh',
          dir,
          parts.map(keptName).join(' '),
          '',
          '0'
        ])
      )
      expect(viaLoader.stdout).toBe(text)
      expect(spawnSync('sh', ['-n', '-c', viaLoader.stdout]).status).toBe(0)
    }
  })
})

/** A target that runs each command here, its /nix/var being tmp; counts what it was sent. */
function localTarget(
  env: NodeJS.ProcessEnv = process.env,
  writesKeptScripts = true
): {
  target: SshTarget
  sent: string[]
  dir: string
} {
  const dir = path.join(tmp, 'nix-var', 'scripts')
  const sent: string[] = []
  const host = {
    target: { label: 'target root@local', user: 'root' },
    alive: true,
    close: () => undefined,
    redialTarget: async () => undefined,
    exec: async (command: string, opts: ExecOptions = {}) => {
      sent.push(command)
      if (opts.stdin !== undefined && typeof opts.stdin !== 'string') throw new Error('no streams here')
      return sh(command.split(KEPT_SCRIPTS_DIR).join(dir), opts.stdin ?? '', env)
    }
  } as unknown as RemoteHost
  const session = new TargetSession(host, async () => host, plainLog)
  return { target: new SshTarget(session, false, writesKeptScripts), sent, dir }
}

describe('SshTarget: sends the hashes of scripts the target keeps', () => {
  it('the first command writes the kept scripts and is sent again; later ones carry only hashes', async () => {
    const { target, sent, dir } = localTarget()
    const first = await target.readState()
    expect(first.uid).toBe(process.getuid!())
    expect(sent).toHaveLength(3)
    expect(isScriptMissing(sh(sent[0].split(KEPT_SCRIPTS_DIR).join(path.join(tmp, 'none'))))).toBe(true)
    expect(sent[1]).toBe(keepScriptsCommand())
    expect(sent[2]).toBe(sent[0])
    expect(fs.readdirSync(dir).sort()).toEqual(KEPT_FILES.map(keptName).sort())
    sent.length = 0
    await target.readState()
    expect(sent).toEqual([keptRunCommand(partsOf(PROBE_SCRIPT)!, undefined, [])])
    // A fraction of the script's own text.
    expect(sent[0].length).toBeLessThan(shellCommand(['sh', '-c', PROBE_SCRIPT, 'sh']).length / 2 + 700)
  })

  it('a kept file changed on the target is written again, never run', async () => {
    const { target, sent, dir } = localTarget()
    await target.readState()
    const marker = path.join(tmp, 'ran')
    fs.writeFileSync(path.join(dir, keptName('probe.sh')), `probe_state() { touch '${marker}'; }\n`)
    sent.length = 0
    const state = await target.readState()
    expect(state.uid).toBe(process.getuid!())
    expect(fs.existsSync(marker)).toBe(false)
    expect(sent.filter(c => c === keepScriptsCommand())).toHaveLength(1)
    expect(fs.readFileSync(path.join(dir, keptName('probe.sh')), 'utf8')).toBe(WIRE_SCRIPT_FILES['probe.sh'])
  })

  it('a target without sha256sum gets each script with its command, from the first miss on', async () => {
    const bin = path.join(tmp, 'bin')
    fs.mkdirSync(bin)
    // Every tool of this machine's but sha256sum.
    for (const from of ['/usr/bin', '/bin'])
      for (const tool of fs.readdirSync(from))
        if (tool !== 'sha256sum' && !fs.existsSync(path.join(bin, tool)))
          fs.symlinkSync(path.join(from, tool), path.join(bin, tool))
    const { target, sent } = localTarget({ PATH: bin })
    await target.readState()
    // Missed, writing refused (keep-scripts.sh checks each file), then the script itself.
    expect(sent).toHaveLength(3)
    expect(sent[2]).toBe(shellCommand(['sh', '-c', PROBE_SCRIPT, 'sh']))
    sent.length = 0
    await target.readState()
    expect(sent).toEqual([shellCommand(['sh', '-c', PROBE_SCRIPT, 'sh'])])
  })

  it('a visit that changes nothing (a dry run, the report job) writes none: it sends the scripts it misses', async () => {
    const { target, sent, dir } = localTarget(process.env, false)
    await target.readState()
    expect(sent).toEqual([
      keptRunCommand(partsOf(PROBE_SCRIPT)!, undefined, [], false),
      shellCommand(['sh', '-c', PROBE_SCRIPT, 'sh'])
    ])
    expect(fs.existsSync(dir)).toBe(false)
    sent.length = 0
    await target.readState()
    expect(sent).toEqual([shellCommand(['sh', '-c', PROBE_SCRIPT, 'sh'])])
    // Where a deploy kept them, it runs them in place.
    sh(keepScriptsCommand(dir))
    const { target: later, sent: laterSent } = localTarget(process.env, false)
    await later.readState()
    expect(laterSent).toEqual([keptRunCommand(partsOf(PROBE_SCRIPT)!, undefined, [], false)])
  })

  it("a script given as stdin (the agent) is read from the kept files: the command's stdin is empty", async () => {
    // A stand-in nohup: the start script's setsid path starts nothing here.
    const bin = path.join(tmp, 'bin')
    fs.mkdirSync(bin)
    fs.writeFileSync(path.join(bin, 'nohup'), '#!/bin/sh\nexit 0\n', { mode: 0o755 })
    const { target, sent } = localTarget({ ...process.env, PATH: `${bin}:${process.env.PATH}` })
    await target.readState()
    sent.length = 0
    const agentDir = path.join(tmp, 'agent')
    // The verb the agent's session sends (over-ssh.ts), through the same private path.
    const run = (target as unknown as { run: (...a: unknown[]) => Promise<RemoteResult> }).run.bind(target)
    const args = ['--dir', agentDir, '--toplevel', '/nix/store/x']
    const r = await run('start-agent', args, { stdin: AGENT_SCRIPT, timeoutMs: 10_000, what: 'x' })
    expect(r).toMatchObject({ exitCode: 0, stdout: 'started-setsid\n' })
    expect(sent).toEqual([
      keptRunCommand(partsOf(PLACE_AND_START_AGENT_SCRIPT)!, partsOf(AGENT_SCRIPT), args)
    ])
    const written = fs.readFileSync(path.join(agentDir, 'agent.sh'), 'utf8')
    expect(written.replace(/\n+/g, '\n')).toBe(AGENT_SCRIPT.replace(/\n+/g, '\n'))
  })
})

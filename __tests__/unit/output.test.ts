import { spawnSync } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import * as ts from 'typescript'
import { runnerView } from '../e2e/harness'
import { info, machineLog, neutralise, printUntrusted } from '../../src/log/untrusted'
import { childEnv, forgetSecretInputs, isPrivateVariable } from '../../src/secrets'
import { TailBuffer } from '../../src/tail-buffer'
import { interceptStdout } from './stdout'

/** Captures what the action writes to stdout while `fn` runs. */
function captureStdout(fn: () => void): string {
  const stdout = interceptStdout()
  try {
    fn()
  } finally {
    stdout.restore()
  }
  return stdout.text()
}

describe("the test harness's model of the runner (what it shows of a step's output)", () => {
  it('an add-mask outside untrusted output masks later lines only', () => {
    const v = runnerView('before s3cr3t-value\n::add-mask::s3cr3t-value\nafter s3cr3t-value\n')
    expect(v.masks).toEqual(['s3cr3t-value'])
    expect(v.shown).toEqual(['before s3cr3t-value', 'after ***', ''])
  })
  it('between stop-commands and its token every line is plain text: an add-mask there registers nothing and shows the secret', () => {
    const v = runnerView('::stop-commands::T1\n::add-mask::s3cr3t-value\n::T1::\nlater s3cr3t-value\n')
    expect(v.masks).toEqual([])
    expect(v.shown).toEqual(['::add-mask::s3cr3t-value', 'later s3cr3t-value', ''])
  })
  it('a multi-line mask (escaped) masks each of its lines', () => {
    const v = runnerView('::add-mask::line-one-aaaa%0Aline-two-bbbb\nx line-two-bbbb\n')
    expect(v.shown[0]).toBe('x ***')
  })
})

describe('the one printer of log lines (log/untrusted.ts)', () => {
  const hostile = 'held by a run\r::error title=pwned::boom\r::add-mask::deploy\x1b[2K\x00'
  it('neutralises a bare \\r and every other control character but tab and newline', () => {
    expect(neutralise('a\rb\r\nc\td\x1be\x00f\x7f')).toBe('a\\x0db\nc\td\\x1be\\x00f\\x7f')
  })
  it("a target's text with \\r::error or ::add-mask:: is shown, never obeyed (info, a machine's log, untrusted blocks)", () => {
    for (const print of [
      () => info(`Waiting for the deploy lock, held by ${hostile}`),
      () => info(hostile),
      () => info(`first line\n::warning::${hostile}`),
      () => machineLog('pi3', true).info(hostile),
      () => machineLog('', false).info(hostile),
      () => printUntrusted(`${hostile}\n::warning::x\n`)
    ]) {
      const v = runnerView(captureStdout(print))
      expect(v.masks).toEqual([])
      expect(v.commands.filter(c => !/^::(stop-commands::|[0-9a-f]{32}::$)/.test(c))).toEqual([])
      expect(v.shown.join('\n')).toMatch(/error title=pwned::boom/)
    }
  })
  it('the forms the runner also obeys: `::` after Unicode whitespace, `##[command]` anywhere in a line; a machine name that escapes', () => {
    for (const print of [
      () => info('built for aarch64-linux\n##[save-state name=storeCache;]{"paths":["--expr"]}'),
      () => info('a ##[error]forged'),
      () => info('\u00a0::warning::forged'),
      () => info('x\n\u2028::add-mask::deploy'),
      () => info('\u0085::error::forged'),
      () => machineLog('pi3', true).info('##[add-mask]deploy'),
      () => machineLog('pi\x1b[2K', true).untrusted('::error::forged')
    ]) {
      const out = captureStdout(print)
      const v = runnerView(out)
      expect(v.masks).toEqual([])
      expect(v.commands.filter(c => !/^::(stop-commands::|[0-9a-f]{32}::$)/.test(c))).toEqual([])
      expect(out).not.toContain('\x1b')
    }
    // The model sees them as commands outside a stop-commands block.
    expect(runnerView('a ##[error]x\n\u00a0::warning::y\n').commands).toHaveLength(2)
  })
  it('text of our own is written as it is', () => {
    expect(captureStdout(() => info('Deploying to root@pi: 3 paths'))).toBe('Deploying to root@pi: 3 paths\n')
  })
})

describe('untrusted output', () => {
  it('is one self-contained stop-commands block per write, prefixed per line for a machine of several', () => {
    const out = captureStdout(() => printUntrusted('a\n::add-mask::x\nb\n', '[pi3] '))
    const m =
      /^::stop-commands::([0-9a-f]{32})\n\[pi3\] a\n\[pi3\] ::add-mask::x\n\[pi3\] b\n::([0-9a-f]{32})::\n$/.exec(
        out
      )
    expect(m).not.toBeNull()
    expect(m![1]).toBe(m![2])
    expect(runnerView(out).masks).toEqual([])
  })
  it('two machines printing in turns never leave commands stopped for the other', () => {
    const a = machineLog('pi3', true)
    const b = machineLog('pi3b', true)
    const out = captureStdout(() => {
      a.untrusted('activating pi3\n')
      b.info('Uploaded key')
      a.untrusted('still pi3\n')
    })
    // Outside any block, a command written now would be obeyed (the runner's view has no open block).
    const v = runnerView(out + '::add-mask::later-secret-1\nlater-secret-1\n')
    expect(v.masks).toEqual(['later-secret-1'])
    expect(v.shown).toContain('[pi3b] Uploaded key')
    expect(v.shown).toContain('[pi3] activating pi3')
  })
  it('groups become prefixed headings with several machines', async () => {
    let out = ''
    const write = process.stdout.write
    process.stdout.write = ((c: string) => ((out += c), true)) as typeof process.stdout.write
    try {
      await machineLog('pi3', true).group('switch', async () => undefined)
    } finally {
      process.stdout.write = write
    }
    expect(out).not.toContain('::group::')
    expect(out).toContain('[pi3] ── switch')
  })
})

describe('child processes', () => {
  it('never get the inputs or the runtime tokens; the rest of the environment stays', () => {
    const env = childEnv({
      PATH: '/bin',
      'INPUT_SSH-PRIVATE-KEY': 'k',
      INPUT_FLAKE: '.#pi',
      ACTIONS_RUNTIME_TOKEN: 't',
      ACTIONS_ID_TOKEN_REQUEST_TOKEN: 'i',
      ACTIONS_ID_TOKEN_REQUEST_URL: 'u',
      ACTIONS_CACHE_URL: 'c',
      HOME: '/root'
    })
    expect(env).toEqual({ PATH: '/bin', ACTIONS_CACHE_URL: 'c', HOME: '/root' })
    expect(isPrivateVariable('input_ssh-private-key')).toBe(true)
  })
  it("a library's own children (@actions/cache's tar and zstd, started with process.env or a spread of it) get no runtime token, which the library still reads", () => {
    // A node process of its own, started with the token in its environment as the runner starts
    // the action (under jest, process.env is a copy a child would not inherit from), running this
    // module's code: two overlapping calls, children started every way @actions/exec and Node do.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-unlisted-'))
    const source = fs.readFileSync(path.join(__dirname, '..', '..', 'src', 'secrets.ts'), 'utf8')
    fs.writeFileSync(
      path.join(dir, 'secrets.js'),
      ts.transpileModule(source, {
        compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022 }
      }).outputText
    )
    const script = `
      const { withPrivateVariablesUnlisted } = require('./secrets.js')
      const { execFileSync } = require('child_process')
      const exec = require('@actions/exec')
      const real = process.env
      const printed = env => execFileSync('sh', ['-c', 'echo "\${ACTIONS_RUNTIME_TOKEN:-none} \${INPUT_FLAKE:-none} \${HOME:+home}"'], { encoding: 'utf8', env }).trim()
      const looks = async () => {
        let viaExec = ''
        await exec.exec('sh', ['-c', 'echo "\${ACTIONS_RUNTIME_TOKEN:-none}"'], {
          env: { ...process.env, MSYS: 'winsymlinks:nativestrict' }, silent: true,
          listeners: { stdout: b => (viaExec += b.toString()) }
        })
        let execInherited = ''
        await exec.exec('sh', ['-c', 'echo "\${ACTIONS_RUNTIME_TOKEN:-none}"'], {
          silent: true, listeners: { stdout: b => (execInherited += b.toString()) }
        })
        return { read: process.env.ACTIONS_RUNTIME_TOKEN, spread: printed({ ...process.env, MSYS: 'x' }),
          inherited: printed(), viaExec: viaExec.trim(), execInherited: execInherited.trim() }
      }
      ;(async () => {
        const control = printed()
        let release
        const first = withPrivateVariablesUnlisted(() => new Promise(r => (release = r)))
        const second = await withPrivateVariablesUnlisted(looks)
        release()
        await first
        console.log(JSON.stringify({ control, second, back: process.env === real, after: printed() }))
      })()`
    const r = spawnSync(process.execPath, ['-e', script], {
      cwd: dir,
      env: {
        PATH: process.env.PATH,
        HOME: '/root',
        NODE_PATH: path.join(__dirname, '..', '..', 'node_modules'),
        ACTIONS_RUNTIME_TOKEN: 'runtime-token-4411',
        INPUT_FLAKE: '.#pi'
      },
      encoding: 'utf8'
    })
    fs.rmSync(dir, { recursive: true, force: true })
    expect(r.stderr).toBe('')
    expect(JSON.parse(r.stdout)).toEqual({
      // Without it, a child gets the token and the inputs.
      control: 'runtime-token-4411 .#pi home',
      second: {
        read: 'runtime-token-4411',
        spread: 'none none home',
        inherited: 'none none home',
        viaExec: 'none',
        execInherited: 'none'
      },
      // The real environment is back once the last overlapping call ended.
      back: true,
      after: 'runtime-token-4411 .#pi home'
    })
  })

  it('the secret inputs are removed from the process environment once read', () => {
    const env: NodeJS.ProcessEnv = {
      'INPUT_SSH-PRIVATE-KEY': 'k',
      'INPUT_JUMP-HOST-KEY': 'j',
      INPUT_FLAKE: 'f'
    }
    forgetSecretInputs(['ssh-private-key', 'jump-host-key'], env)
    expect(env).toEqual({ INPUT_FLAKE: 'f' })
  })
})

describe("the process's own start environment (/proc/PID/environ)", () => {
  it('no longer holds a secret input or a runtime token once the inputs are forgotten: their values blanked where the kernel shows them to the same user', () => {
    // A process of its own, started with the secret in its environment (as the runner starts the
    // action), running this module's code (transpiled as it is).
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-environ-'))
    const source = fs.readFileSync(path.join(__dirname, '..', '..', 'src', 'secrets.ts'), 'utf8')
    fs.writeFileSync(
      path.join(dir, 'secrets.js'),
      ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.CommonJS } }).outputText
    )
    const secret = 'abcdSECRETline\nSECOND-line-of-it'
    const script = `
      const { forgetSecretInputs } = require('./secrets.js')
      const read = () => require('child_process').execFileSync('cat', ['/proc/' + process.pid + '/environ']).toString()
      const before = read()
      forgetSecretInputs(['ssh-private-key'])
      console.log(JSON.stringify({ before, after: read(), other: process.env.INPUT_FLAKE, token: process.env.ACTIONS_RUNTIME_TOKEN }))`
    const r = spawnSync(process.execPath, ['-e', script], {
      cwd: dir,
      env: {
        PATH: process.env.PATH,
        NODE_PATH: path.join(__dirname, '..', '..', 'node_modules'),
        'INPUT_SSH-PRIVATE-KEY': secret,
        INPUT_FLAKE: '.#pi',
        ACTIONS_RUNTIME_TOKEN: 'runtime-TOKEN-7731'
      },
      encoding: 'utf8'
    })
    fs.rmSync(dir, { recursive: true, force: true })
    expect(r.stderr).toBe('')
    const seen = JSON.parse(r.stdout) as { before: string; after: string; other: string; token: string }
    expect(seen.before).toContain('SECRETline')
    expect(seen.after).not.toContain('SECRETline')
    expect(seen.after).not.toContain('SECOND-line')
    // The runtime token too, which the process itself still reads (its client sends it).
    expect(seen.before).toContain('runtime-TOKEN-7731')
    expect(seen.after).not.toContain('runtime-TOKEN-7731')
    expect(seen.token).toBe('runtime-TOKEN-7731')
    // The rest stays, read as before.
    expect(seen.after).toContain('INPUT_FLAKE=.#pi')
    expect(seen.other).toBe('.#pi')
  })
})

describe('bounded output', () => {
  it('keeps the tail of what a command prints, never more than its limit', () => {
    const b = new TailBuffer(10)
    for (let i = 0; i < 1000; i++) b.push(Buffer.from(`${i % 10}`))
    expect(b.toString()).toBe('0123456789')
    expect(b.truncated).toBe(true)
    const small = new TailBuffer(100)
    small.push(Buffer.from('abc'))
    expect(small.toString()).toBe('abc')
    expect(small.truncated).toBe(false)
  })
})

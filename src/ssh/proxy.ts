import { ChildProcess, spawn } from 'child_process'
import { Duplex } from 'stream'
import { childEnv } from '../secrets'
import { TailBuffer } from '../tail-buffer'
import { isValidHost, isValidUser } from './address'
import { shellQuote } from './quote'

/**
 * `proxy-command`: a command on the runner whose stdin and stdout carry the SSH connection to the
 * first hop, as OpenSSH's ProxyCommand (cloudflared access ssh, tailscale nc, ssh -W, socat). The
 * tokens are OpenSSH's: %h host, %p port, %r user, %n the name as given (the machine's name in a
 * network file), %% a percent sign.
 */
export interface ProxyTokens {
  host: string
  port: number
  user: string
  name: string
}

const TOKENS = ['h', 'p', 'r', 'n', '%'] as const

/** A machine name as %n may carry it (network files name machines freely; a shell word must not). */
const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/

/** What is wrong with a proxy-command template (an unknown or a dangling %), or undefined. */
export function proxyTemplateProblem(template: string): string | undefined {
  for (let i = 0; i < template.length; i++) {
    if (template[i] !== '%') continue
    const t = template[i + 1]
    if (t === undefined) return 'proxy-command ends with a lone "%" (write %% for a percent sign)'
    if (!(TOKENS as readonly string[]).includes(t))
      return `proxy-command has an unknown token %${t}: the tokens are %h (host), %p (port), %r (user), %n (name) and %%`
    i++
  }
  return undefined
}

/**
 * The command with its tokens replaced, in one pass (a value is never expanded again), each value
 * shell-quoted. Values that are not a host name or address, a port, a user name or a plain machine
 * name are refused rather than quoted: they cannot come from a valid input anyway.
 */
export function expandProxyCommand(template: string, t: ProxyTokens): string {
  const problem = proxyTemplateProblem(template)
  if (problem) throw new Error(problem)
  if (!isValidHost(t.host))
    throw new Error(`proxy-command: ${JSON.stringify(t.host)} is not a host name or address`)
  if (!isValidUser(t.user)) throw new Error(`proxy-command: ${JSON.stringify(t.user)} is not a user name`)
  if (!Number.isInteger(t.port) || t.port < 1 || t.port > 65535)
    throw new Error(`proxy-command: ${t.port} is not a port`)
  if (!NAME.test(t.name))
    throw new Error(`proxy-command: ${JSON.stringify(t.name)} is not a plain machine name`)
  const value: Record<string, string> = {
    h: shellQuote(t.host),
    p: String(t.port),
    r: shellQuote(t.user),
    n: shellQuote(t.name),
    '%': '%'
  }
  return template.replace(/%(.)/g, (_, c: string) => value[c])
}

/** Every proxy this process started and has not seen exit: ended when the action exits. */
const running = new Set<ChildProcess>()
let exitHookInstalled = false

/** Ends a proxy and everything it started (it runs in a process group of its own). */
function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return
  try {
    process.kill(-child.pid, signal)
  } catch {
    // already gone
  }
}

/**
 * Ends every proxy this process started and waits until each has exited (SIGTERM, then SIGKILL
 * after two seconds): the run's last step, so that no tunnel outlives the action. A loaded runner
 * may take a moment to end a killed process; the exit hook alone would not wait for it.
 */
export async function endAllProxies(): Promise<void> {
  await Promise.all(
    [...running].map(
      child =>
        new Promise<void>(resolve => {
          // Never started (spawn failed) or already ended: nothing to wait for.
          if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null)
            return resolve()
          child.once('exit', () => resolve())
          child.once('error', () => resolve())
          killGroup(child, 'SIGTERM')
          setTimeout(() => killGroup(child, 'SIGKILL'), 2000).unref()
        })
    )
  )
}

/** A running proxy-command: the stream ssh2 talks over, and what to say when it fails. */
export class ProxyProcess {
  readonly stream: Duplex
  /** Resolves when the proxy exits: its exit status, or the signal that ended it. */
  readonly exited: Promise<string>
  private readonly stderr = new TailBuffer(64 << 10)
  private readonly child: ChildProcess

  /** Starts `command` (already expanded) with `sh -c`, without the action's inputs in its environment. */
  constructor(command: string, onStderr: (text: string) => void = () => undefined) {
    this.child = spawn('sh', ['-c', command], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: childEnv(process.env),
      detached: true
    })
    running.add(this.child)
    if (!exitHookInstalled) {
      exitHookInstalled = true
      process.once('exit', () => {
        for (const c of running) killGroup(c, 'SIGKILL')
      })
    }
    this.exited = new Promise(resolve => {
      this.child.once('error', e => resolve(`could not be started: ${e.message}`))
      this.child.once('exit', (code, signal) => {
        running.delete(this.child)
        resolve(code !== null ? `exit status ${code}` : `signal ${signal}`)
      })
    })
    this.child.stderr!.on('data', (d: Buffer) => {
      this.stderr.push(d)
      onStderr(d.toString('utf8'))
    })
    this.stream = Duplex.from({ readable: this.child.stdout!, writable: this.child.stdin! })
    // A proxy that exits closes its pipes: writes after that must not crash the action.
    this.stream.on('error', () => undefined)
    this.child.stdin!.on('error', () => undefined)
  }

  get pid(): number | undefined {
    return this.child.pid
  }

  /** Its last stderr lines, for an error message. */
  stderrTail(lines = 5): string {
    return this.stderr.toString().trim().split('\n').slice(-lines).join('\n')
  }

  /** Ends it: SIGTERM to its process group, SIGKILL two seconds later if it is still there. */
  kill(): void {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return
    killGroup(this.child, 'SIGTERM')
    const timer = setTimeout(() => killGroup(this.child, 'SIGKILL'), 2000)
    timer.unref()
    void this.exited.then(() => clearTimeout(timer))
  }
}

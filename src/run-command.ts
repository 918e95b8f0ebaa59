import { spawn } from 'child_process'
import { childEnv } from './secrets'
import { TailBuffer } from './tail-buffer'

const MAX_KEPT_STDOUT = 256 << 20
const MAX_KEPT_STDERR = 8 << 20

export interface CommandResult {
  exitCode: number
  stdout: string
  stderr: string
}

export interface RunOptions {
  /** Called with each complete line of stderr (build logs), e.g. to show progress in the step log. */
  onStderrLine?: (line: string) => void
  env?: NodeJS.ProcessEnv
  input?: string
  /** Kills the command after this long; the result then has exitCode -1 and a note in stderr. */
  timeoutMs?: number
}

/**
 * Runs a local command without a shell (argv only, so nothing in it is interpreted) and collects its
 * output. Never throws for a non-zero exit; the caller turns that into an ActionError that says what
 * to do.
 */
export function runCommand(cmd: string, args: string[], opts: RunOptions = {}): Promise<CommandResult> {
  return new Promise(resolve => {
    // Children never see the inputs or the runtime tokens (see childEnv), whatever env the caller gives.
    const child = spawn(cmd, args, {
      env: childEnv(opts.env ?? process.env),
      stdio: ['pipe', 'pipe', 'pipe']
    })
    // What a command prints is kept up to a limit (its tail): a build log can be endless.
    const out = new TailBuffer(MAX_KEPT_STDOUT)
    const err = new TailBuffer(MAX_KEPT_STDERR)
    let partial = ''
    let timedOut = false
    const timer =
      opts.timeoutMs !== undefined
        ? setTimeout(() => {
            timedOut = true
            child.kill('SIGKILL')
          }, opts.timeoutMs)
        : undefined
    child.stdout.on('data', (d: Buffer) => out.push(d))
    child.stderr.on('data', (d: Buffer) => {
      err.push(d)
      if (opts.onStderrLine) {
        const lines = (partial + d.toString('utf8')).split('\n')
        partial = lines.pop() ?? ''
        lines.forEach(l => opts.onStderrLine?.(l))
      }
    })
    child.on('error', e => {
      if (timer) clearTimeout(timer)
      resolve({ exitCode: 127, stdout: '', stderr: `${cmd}: ${e.message}` })
    })
    child.on('close', code => {
      if (timer) clearTimeout(timer)
      if (partial && opts.onStderrLine) opts.onStderrLine(partial)
      let stderr = err.toString()
      if (timedOut) stderr += `\n${cmd}: killed after ${opts.timeoutMs} ms`
      resolve({ exitCode: timedOut ? -1 : (code ?? -1), stdout: out.toString(), stderr })
    })
    child.stdin.on('error', () => undefined)
    child.stdin.end(opts.input ?? '')
  })
}

/** The last `n` non-empty lines of a text, for error messages and summaries. */
export function tail(text: string, n: number): string {
  return text
    .split('\n')
    .filter(l => l.trim() !== '')
    .slice(-n)
    .join('\n')
}

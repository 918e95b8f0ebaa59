import { ChildProcessWithoutNullStreams, spawn } from 'child_process'
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
  /**
   * Nix settings that are secrets (access-tokens): the command (a Nix command) reads them as its
   * first user configuration file, /dev/fd/3, a pipe that holds them only until it is read: never in
   * its argv or environment (others may read those in /proc) nor in a file. Not with timeoutMs
   * (the command runs under a shell, which a timeout would kill, not the command).
   */
  secretNixConfig?: string
  /**
   * A secret the command reads from the file /dev/fd/3 (e.g. a signing key named in a store URI's
   * secret-key parameter), on a pipe as secretNixConfig is; not with secretNixConfig or timeoutMs.
   */
  secretFile?: string
}

/**
 * Node's stdio pipes are sockets, which /dev/fd/N cannot open: `cat` moves fd 3 (the socket) into a
 * real pipe, which becomes the command's fd 3; its stdin stays what it was.
 */
const SECRET_CONFIG_WRAPPER = 'exec 4<&0; cat <&3 | { exec 3<&0 0<&4 4<&-; exec "$@"; }'

/**
 * NIX_USER_CONF_FILES for a command that reads secret settings from /dev/fd/3: that first (the
 * first file takes priority), then the user's own files, which setting the variable would otherwise
 * replace (Nix's defaults: $XDG_CONFIG_HOME and each of $XDG_CONFIG_DIRS, then nix/nix.conf).
 */
export function userConfFilesWithSecret(env: NodeJS.ProcessEnv): string {
  const own =
    env.NIX_USER_CONF_FILES ??
    [env.XDG_CONFIG_HOME || `${env.HOME ?? ''}/.config`, ...(env.XDG_CONFIG_DIRS || '/etc/xdg').split(':')]
      .filter(d => d !== '')
      .map(d => `${d}/nix/nix.conf`)
      .join(':')
  return own ? `/dev/fd/3:${own}` : '/dev/fd/3'
}

/**
 * Spawns the command (argv only) with the environment children may see; a secret (secretNixConfig
 * or secretFile) goes through SECRET_CONFIG_WRAPPER and is written to its /dev/fd/3.
 */
function startCommand(cmd: string, args: string[], opts: RunOptions): ChildProcessWithoutNullStreams {
  // Children never see the inputs or the runtime tokens (see childEnv), whatever env the caller gives.
  const base = childEnv(opts.env ?? process.env)
  if (opts.secretNixConfig !== undefined && opts.secretFile !== undefined)
    throw new Error('runCommand: secretNixConfig with secretFile (both are /dev/fd/3)')
  const secret = opts.secretNixConfig ?? opts.secretFile
  if (secret !== undefined && opts.timeoutMs !== undefined)
    throw new Error('runCommand: a secret on /dev/fd/3 with timeoutMs')
  const env =
    opts.secretNixConfig === undefined
      ? base
      : { ...base, NIX_USER_CONF_FILES: userConfFilesWithSecret(base) }
  const child =
    secret === undefined
      ? spawn(cmd, args, { env: base, stdio: ['pipe', 'pipe', 'pipe'] })
      : spawn('sh', ['-c', SECRET_CONFIG_WRAPPER, 'sh', cmd, ...args], {
          env,
          stdio: ['pipe', 'pipe', 'pipe', 'pipe']
        })
  if (secret !== undefined) {
    const fd3 = child.stdio[3] as NodeJS.WritableStream & { on(e: 'error', f: () => void): void }
    fd3.on('error', () => undefined)
    fd3.end(secret)
  }
  return child
}

/**
 * Runs a local command without a shell (argv only, so nothing in it is interpreted) and collects its
 * output. Never throws for a non-zero exit; the caller turns that into an ActionError that says what
 * to do.
 */
export function runCommand(cmd: string, args: string[], opts: RunOptions = {}): Promise<CommandResult> {
  return new Promise(resolve => {
    const child = startCommand(cmd, args, opts)
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

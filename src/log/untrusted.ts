import * as core from '@actions/core'
import { randomBytes } from 'crypto'

/**
 * The step's stdout is one stream of lines for the runner, and workflow commands are a state of
 * that stream: between `::stop-commands::T` and `::T::` every line is plain text, so an
 * `::add-mask::` printed there registers nothing and shows the secret it was meant to hide. With
 * several machines deploying at once, one machine's untrusted output must never be open while
 * another's add-mask or log line is written. So untrusted text (build logs, activation output: a
 * pull request's code can print anything there) is written in self-contained chunks: one write
 * holding the stop token, the text and the resume token. Node writes each call whole and in call
 * order, so nothing can land inside a chunk, and no state is held across an await.
 *
 * Secrets are registered before any untrusted text is printed (main: inputs first, then every
 * machine's deployment.keys, before the build), so no add-mask can be needed while a chunk is open.
 */
export function printUntrusted(text: string, prefix = ''): void {
  if (text === '') return
  // A progress line's bare \r becomes a line end; every other control character is shown escaped.
  const plain = neutralise(text.replace(/\r(?!\n)/g, '\n'))
  const body = plain.endsWith('\n') ? plain.slice(0, -1) : plain
  // A machine's name is text from a network file too.
  const lines = prefix ? body.replace(/^/gm, neutralise(prefix)) : body
  const token = randomBytes(16).toString('hex')
  process.stdout.write(`::stop-commands::${token}\n${lines}\n::${token}::\n`)
}

/**
 * Every control character but tab and newline shown as an escape (`\x0d`): the runner reads the
 * step's output with .NET's ReadLine, which also ends a line at a bare \r, so a \r in text from a
 * target (a lock holder's description, an error's stderr) would start a line of its own, and a
 * line that starts with `::` is a workflow command.
 */
// Control characters are what it looks for.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f]/g
export function neutralise(text: string): string {
  return text
    .replace(/\r\n/g, '\n')
    .replace(CONTROL, c => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`)
}

/**
 * Whether the runner would read some line of `text` as a workflow command (actions/runner's
 * ActionCommand): `::` after any whitespace .NET's TrimStart removes (U+00A0, U+2028, NEL, ...),
 * or the older `##[command]` form anywhere in a line (still obeyed: `##[save-state ...]` too).
 */
export function mayBeCommand(text: string): boolean {
  return /##\[/.test(text) || /(^|\n)[\s\u0085]*::/.test(text)
}

/**
 * The one printer of plain log lines (core.info writes its text as it is, so it is called here only).
 * Control characters are neutralised; a message in which some line could still be read as a
 * workflow command (text from elsewhere) is printed with commands off.
 */
export function info(message: string): void {
  const shown = neutralise(message)
  if (mayBeCommand(shown)) printUntrusted(shown)
  else core.info(shown)
}

/**
 * Where a deploy writes its log lines. With one machine, its lines go out as they are and log
 * groups fold them. With several deploying at once, groups are a state of the one stdout too (a
 * second machine's lines would land inside the first's group), so every line is prefixed with the
 * machine's name instead and a group becomes a prefixed heading line.
 */
export interface Log {
  /** `[name] ` for a machine of several, '' otherwise. */
  readonly prefix: string
  info(message: string): void
  /** A line now, and a warning for the report (src/report/publish.ts annotates it at the end). */
  warning(message: string): void
  /** The warnings logged so far (the machine's report's own list, when it was given one). */
  readonly warnings: string[]
  /** Text from the target or a build: shown, never obeyed (see printUntrusted). */
  untrusted(text: string): void
  group<T>(title: string, fn: () => Promise<T>): Promise<T>
}

/**
 * A warning: a log line now, where it happened, and an entry in a report's list, which
 * src/report/publish.ts annotates when the run ends (the one writer of annotations).
 */
export function logWarning(warnings: string[], message: string, prefix = ''): void {
  info(`${prefix}Warning: ${message}`.replace(/\n/g, `\n${prefix}`))
  warnings.push(message)
}

export function machineLog(name: string, several: boolean, warnings: string[] = []): Log {
  const prefix = several && name ? `[${name}] ` : ''
  const warning = (m: string): void => logWarning(warnings, m, prefix)
  if (!prefix)
    return {
      prefix,
      info: m => info(m),
      warning,
      warnings,
      untrusted: t => printUntrusted(t),
      group: async (title, fn) => {
        core.startGroup(title)
        try {
          return await fn()
        } finally {
          core.endGroup()
        }
      }
    }
  return {
    prefix,
    info: m => info(m.replace(/^/gm, prefix)),
    warning,
    warnings,
    untrusted: t => printUntrusted(t, prefix),
    group: async (title, fn) => {
      info(`${prefix}── ${title}`)
      return fn()
    }
  }
}

/** A log of no machine's report (tests, and defaults): its warnings stay in its own list. */
export const plainLog: Log = machineLog('', false)

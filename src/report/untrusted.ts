import { randomBytes } from 'crypto'

/**
 * Prints text that comes from Nix builds or the target (a pull request's code can write anything
 * there) with workflow commands switched off, so a line like `::add-mask::` or `::set-output` in a
 * build log is shown, not obeyed.
 */
export async function withCommandsOffAsync<T>(fn: (print: (text: string) => void) => Promise<T>): Promise<T> {
  const token = randomBytes(16).toString('hex')
  process.stdout.write(`::stop-commands::${token}\n`)
  try {
    return await fn(text => process.stdout.write(text))
  } finally {
    process.stdout.write(`\n::${token}::\n`)
  }
}

/**
 * POSIX shell quoting for commands run on the Pi. sshd hands the command string to the user's login
 * shell, so every argument is wrapped in single quotes (inside which nothing is special) and each
 * embedded single quote becomes '\''. No input can then change the command's structure.
 */
export function shellQuote(arg: string): string {
  if (arg.includes('\0')) throw new Error('a shell argument cannot contain a NUL byte')
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) && !arg.startsWith('-') && !arg.startsWith('=')) return arg
  return `'${arg.replace(/'/g, `'\\''`)}'`
}

/** Joins argv into one command string for a POSIX shell, quoting each argument. */
export function shellCommand(argv: readonly string[]): string {
  if (argv.length === 0) throw new Error('empty command')
  return argv.map(shellQuote).join(' ')
}

/** Takes over the action's stdout: what is written from now on is kept, until `restore`. */
export function interceptStdout(): { text: () => string; restore: () => void } {
  const write = process.stdout.write
  let out = ''
  process.stdout.write = ((chunk: string | Uint8Array): boolean => {
    out += chunk.toString()
    return true
  }) as typeof process.stdout.write
  return { text: () => out, restore: () => void (process.stdout.write = write) }
}

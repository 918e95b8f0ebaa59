/** An SSH private key as given; kept in memory only, never written to disk. */
export interface PrivateKey {
  /** The key text (OpenSSH, PEM or PPK). */
  text: string
  passphrase?: string
}

/** One SSH hop with every default applied. */
export interface Endpoint {
  host: string
  port: number
  user: string
  key: PrivateKey
  /** For messages: "target" or "jump host", followed by user@host:port. */
  label: string
  /** The name it was given by (a network file's machine name): proxy-command's %n; else the host. */
  name?: string
}

const KEY_START = /^(?:-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----|PuTTY-User-Key-File-\d+:)/

/**
 * Splits a secret holding several private keys, one after another (OpenSSH, PEM or PuTTY files
 * pasted together), into one text per key, in order. Text that starts no key stays with the key
 * before it (or is a key of its own when it comes first), so the key parser names what is wrong.
 */
export function splitPrivateKeys(text: string): string[] {
  const keys: string[][] = []
  for (const line of text.split(/\r?\n/)) {
    if (KEY_START.test(line.trim()) || keys.length === 0) keys.push([])
    keys[keys.length - 1].push(line)
  }
  return keys.map(k => k.join('\n').trim()).filter(k => k !== '')
}

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

/** What evaluating one system gives: its toplevel derivation and output, and its platforms. */
export interface Evaluation {
  drvPath: string
  outPath: string
  /** The platform the toplevel derivation is built on (`toplevel.system`). */
  buildSystem: string
  /** The platform the configuration runs on (nixpkgs.hostPlatform), i.e. the Pi's. */
  hostSystem: string
}

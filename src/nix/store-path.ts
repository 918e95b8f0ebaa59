/** Nix store path syntax: /nix/store/<32 chars of nix base32>-<name>. */
const STORE_PATH = /^\/nix\/store\/[0123456789abcdfghijklmnpqrsvwxyz]{32}-[A-Za-z0-9+\-._?=]+$/

export function isStorePath(s: string): boolean {
  return STORE_PATH.test(s) && !s.slice(44).startsWith('.')
}

/** Throws unless `s` is a store path; used on every path that comes back from Nix or the Pi. */
export function assertStorePath(s: string, what: string): string {
  if (!isStorePath(s)) throw new Error(`${what} is not a Nix store path: ${JSON.stringify(s)}`)
  return s
}

/** The name part of a store path: /nix/store/<hash>-nixos-system-pi-24.05 -> nixos-system-pi-24.05 */
export function storePathName(p: string): string {
  return p.slice('/nix/store/'.length + 33)
}

/**
 * The `flake` input, read the way nixos-rebuild reads `--flake`: `ref#name` selects
 * `nixosConfigurations.<name>` of the flake `ref`.
 */
export interface FlakeTarget {
  /** The flake reference, e.g. `.`, `github:me/pi`, `path:/srv/pi`. */
  ref: string
  /** The configuration's name under nixosConfigurations. */
  name: string
  /** The installable to evaluate: ref#nixosConfigurations."name". */
  installable: string
}

const NAME = /^[A-Za-z0-9_][A-Za-z0-9_'.-]*$/

export function parseFlakeTarget(s: string): FlakeTarget {
  const hash = s.indexOf('#')
  if (hash < 0)
    throw new Error(
      `flake ${JSON.stringify(s)} names no configuration: write "<flake>#<name>" for nixosConfigurations.<name>, e.g. ".#pi3"`
    )
  const ref = s.slice(0, hash)
  const name = s.slice(hash + 1)
  if (ref === '' || /\s/.test(ref) || ref.startsWith('-'))
    throw new Error(
      `flake ${JSON.stringify(s)}: the part before "#" must be a flake reference such as "." or "github:owner/repo"`
    )
  if (!NAME.test(name))
    throw new Error(
      `flake ${JSON.stringify(s)}: ${JSON.stringify(name)} is not a configuration name (letters, digits, "_", "-", "." and "'")`
    )
  return { ref, name, installable: `${ref}#nixosConfigurations."${name}"` }
}

/** The host a github: flake reference is fetched from: its `host=` (GitHub Enterprise), else github.com. */
export function githubHost(ref: string): string | undefined {
  if (!ref.startsWith('github:')) return undefined
  const query = ref.split('#')[0].split('?')[1] ?? ''
  return new URLSearchParams(query).get('host') ?? 'github.com'
}

/**
 * The nix.conf line that gives github-token to Nix's GitHub fetcher: for github.com, and for each
 * other host a github: reference in the action's own inputs names (never a host a lock file
 * names: a pull request could point one anywhere).
 */
export function githubAccessConfig(token: string, refs: string[]): string {
  const hosts = new Set(['github.com'])
  for (const ref of refs) {
    const host = githubHost(ref)
    if (host && /^[A-Za-z0-9.-]{1,253}$/.test(host)) hosts.add(host)
  }
  return `access-tokens = ${[...hosts].map(h => `${h}=${token}`).join(' ')}\n`
}

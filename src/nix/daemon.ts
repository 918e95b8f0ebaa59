import { ActionError } from '../errors'

/**
 * What the store the runner's Nix builds in says of this user: `nix store info --json` (Nix 2.26;
 * `nix store ping --json` in some earlier versions; Nix 2.8 has neither). With a nix-daemon (a multi-user install, as install-nix-action
 * and nix-installer-action set up), `trusted` says whether the daemon applies this user's restricted
 * settings: for anyone not in trusted-users it ignores most settings passed on the command line
 * (seen on 2.26: `extra-platforms`, `sandbox`, `system-features`, untrusted substituters), with
 * only a warning.
 */
export interface StoreInfo {
  url: string
  /** The daemon's (or local store's) Nix version. */
  version?: string
  /** Undefined when the store does not say (a local store, or a daemon that does not report it). */
  trusted?: boolean
}

/** Parses `nix store info --json` / `nix store ping --json`; undefined for anything else. */
export function parseStoreInfo(json: string): StoreInfo | undefined {
  let v: unknown
  try {
    v = JSON.parse(json)
  } catch {
    return undefined
  }
  if (typeof v !== 'object' || v === null || typeof (v as { url?: unknown }).url !== 'string')
    return undefined
  const o = v as { url: string; version?: unknown; trusted?: unknown }
  return {
    url: o.url,
    version: typeof o.version === 'string' ? o.version : undefined,
    // 1/0 in every Nix that reports it; a boolean accepted too.
    trusted: o.trusted === undefined || o.trusted === null ? undefined : o.trusted === 1 || o.trusted === true
  }
}

/** What a Nix configuration (`nix config show --json`, `nix show-config --json`) says it can build. */
export interface ConfiguredPlatforms {
  system: string
  extraPlatforms: string[]
}

export function parseConfiguredPlatforms(json: string): ConfiguredPlatforms | undefined {
  let v: Record<string, { value?: unknown } | undefined>
  try {
    v = JSON.parse(json) as Record<string, { value?: unknown } | undefined>
  } catch {
    return undefined
  }
  const system = v.system?.value
  if (typeof system !== 'string') return undefined
  const extra = v['extra-platforms']?.value
  // A list in every version seen (2.8, 2.26); a space-separated string accepted too.
  const extraPlatforms = Array.isArray(extra)
    ? extra.map(String)
    : typeof extra === 'string'
      ? extra.split(/\s+/).filter(Boolean)
      : []
  return { system, extraPlatforms }
}

/**
 * Whether the runner's Nix would refuse to build `system` because its daemon ignores the action's
 * `extra-platforms`: the user is not trusted and the daemon's own configuration (nix.conf, which a
 * multi-user install shares between the daemon and its clients) does not list the platform. Known
 * before anything is built, so the run fails at once with what to change rather than after Nix has
 * evaluated, fetched and started building.
 */
export function untrustedEmulationError(
  system: string,
  store: StoreInfo | undefined,
  configured: ConfiguredPlatforms | undefined,
  user: string
): ActionError | undefined {
  if (store?.trusted !== false || !configured) return undefined
  if (configured.system === system || configured.extraPlatforms.includes(system)) return undefined
  return new ActionError(
    `the nix-daemon (Nix ${store.version ?? 'unknown version'}) will not build ${system}: ${user} is not in its trusted-users, so it ignores the action's extra-platforms = ${system}, and its nix.conf does not list ${system} in extra-platforms`,
    `Add "extra-platforms = ${system}" to the daemon's nix.conf (/etc/nix/nix.conf; with cachix/install-nix-action put it in extra_nix_config, with DeterminateSystems/nix-installer-action in extra-conf) and restart nix-daemon, or add ${user} to trusted-users there.`,
    'build'
  )
}

/** Client settings (nix-options) and substituters a daemon ignored for this user. */
export interface IgnoredSettings {
  settings: string[]
  substituters: string[]
}

/**
 * The client settings a nix-daemon ignored, as it says on the client's stderr (Nix 2.26 warns for
 * each; a daemon that only logs it at debug level gives nothing to find here). Asked of Nix rather
 * than listed here: which settings an untrusted client may set depends on the version, and
 * evaluation settings (pure-eval, access-tokens, …) never reach the daemon at all.
 */
export function parseIgnoredSettings(stderr: string): IgnoredSettings {
  const all = (re: RegExp): string[] => [...new Set([...stderr.matchAll(re)].map(m => m[1]))]
  return {
    settings: all(/ignoring the client-specified setting '([^']+)', because it is a restricted setting/g),
    substituters: all(/ignoring untrusted substituter '([^']+)'/g)
  }
}

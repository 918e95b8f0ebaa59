import { assertStorePath } from './store-path'

/** What `nix path-info --json` says about one store path (only the fields the action uses). */
export interface PathInfo {
  path: string
  narSize: number
  references: string[]
}

/**
 * The entries of `nix path-info --json` output. Nix up to 2.18 prints an array of objects with a
 * `path` field; 2.19+ prints an object keyed by path. Both are accepted.
 */
function pathInfoEntries(json: string): Array<[string, Record<string, unknown> | null]> {
  const data = JSON.parse(json) as unknown
  return Array.isArray(data)
    ? data.map(e => [String((e as { path: unknown }).path), e as Record<string, unknown>])
    : Object.entries(data as Record<string, Record<string, unknown> | null>)
}

/** Each path's NAR size and references (a closure, as the runner lists it). */
export function parsePathInfoJson(json: string): PathInfo[] {
  return pathInfoEntries(json).map(([path, info]) => {
    if (info === null) throw new Error(`nix path-info: ${path} is not valid`)
    return {
      path: assertStorePath(path, 'nix path-info entry'),
      narSize: Number(info.narSize ?? 0),
      references: ((info.references as string[] | undefined) ?? []).map(r =>
        assertStorePath(r.startsWith('/') ? r : `/nix/store/${r}`, 'reference')
      )
    }
  })
}

/** What a narinfo needs of each path (its NAR's hash and size), by path. */
export function parseNarFacts(json: string): Map<string, { narHash: string; narSize: number }> {
  return new Map(
    pathInfoEntries(json).map(([path, info]) => {
      const narHash = info?.narHash
      if (typeof narHash !== 'string' || !/^sha256[:-][A-Za-z0-9+/=]+$/.test(narHash))
        throw new Error(`nix path-info: no NAR hash for ${path}`)
      return [assertStorePath(path, 'nix path-info entry'), { narHash, narSize: Number(info?.narSize ?? 0) }]
    })
  )
}

/**
 * Orders paths so every path comes after the paths it references (within the set): the order
 * `nix-store --import` needs, since it registers a path only when its references are valid.
 */
export function topoSort(infos: PathInfo[]): PathInfo[] {
  const byPath = new Map(infos.map(i => [i.path, i]))
  const done = new Set<string>()
  const visiting = new Set<string>()
  const out: PathInfo[] = []
  const visit = (info: PathInfo): void => {
    if (done.has(info.path)) return
    if (visiting.has(info.path)) throw new Error(`reference cycle through ${info.path}`)
    visiting.add(info.path)
    for (const r of [...info.references].sort()) {
      const dep = byPath.get(r)
      if (dep && r !== info.path) visit(dep)
    }
    visiting.delete(info.path)
    done.add(info.path)
    out.push(info)
  }
  for (const info of [...infos].sort((a, b) => a.path.localeCompare(b.path))) visit(info)
  return out
}

export function totalNarSize(infos: PathInfo[]): number {
  return infos.reduce((sum, i) => sum + i.narSize, 0)
}

/**
 * Which of a build's paths a binary cache holds as this build made them but without `keyName`'s
 * signature (to sign there), and which it holds with another content under the same name (never
 * signed: in a cache others write to, a path published first by someone else is theirs). From
 * `nix path-info --json` of the runner's store (`local`) and of the cache with `--sigs` (`cached`).
 */
export function signableInCache(
  local: string,
  cached: string,
  keyName: string
): { toSign: string[]; foreign: string[] } {
  const facts = (info: Record<string, unknown> | null): string =>
    JSON.stringify([
      info?.narHash,
      Number(info?.narSize ?? 0),
      [...((info?.references as string[] | undefined) ?? [])]
        .map(r => r.replace(/^\/nix\/store\//, ''))
        .sort()
    ])
  const inCache = new Map(pathInfoEntries(cached))
  const toSign: string[] = []
  const foreign: string[] = []
  for (const [path, info] of pathInfoEntries(local)) {
    const there = inCache.get(path)
    const sigs = (there?.signatures as string[] | undefined) ?? []
    if (sigs.some(s => s.split(':')[0] === keyName)) continue
    if (!there || typeof info?.narHash !== 'string' || facts(there) !== facts(info)) foreign.push(path)
    else toSign.push(assertStorePath(path, 'nix path-info entry'))
  }
  return { toSign, foreign }
}

import { assertStorePath } from './store-path'

/** What `nix path-info --json` says about one store path (only the fields the action uses). */
export interface PathInfo {
  path: string
  narSize: number
  references: string[]
}

/**
 * Parses `nix path-info --json` output. Nix up to 2.18 prints an array of objects with a `path`
 * field; 2.19+ prints an object keyed by path. Both are accepted.
 */
export function parsePathInfoJson(json: string): PathInfo[] {
  const data = JSON.parse(json) as unknown
  const entries: Array<[string, Record<string, unknown>]> = Array.isArray(data)
    ? data.map(e => [String((e as { path: unknown }).path), e as Record<string, unknown>])
    : Object.entries(data as Record<string, Record<string, unknown>>)
  return entries.map(([path, info]) => {
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

/** The NAR hash of each path in `nix path-info --json` output (either layout), by path. */
export function parseNarHashes(json: string): Map<string, string> {
  const data = JSON.parse(json) as unknown
  const entries: Array<[string, Record<string, unknown> | null]> = Array.isArray(data)
    ? data.map(e => [String((e as { path: unknown }).path), e as Record<string, unknown>])
    : Object.entries(data as Record<string, Record<string, unknown> | null>)
  return new Map(
    entries.map(([path, info]) => {
      const hash = info?.narHash
      if (typeof hash !== 'string' || !/^sha256[:-][A-Za-z0-9+/=]+$/.test(hash))
        throw new Error(`nix path-info: no NAR hash for ${path}`)
      return [assertStorePath(path, 'nix path-info entry'), hash]
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

/**
 * What a deploy changes, from the store path names of two closures, like nvd: packages added,
 * removed, and whose versions changed, plus closure sizes. Pure: the closures are listed elsewhere.
 */
import { storePathName } from '../nix/store-path'

export interface ClosureEntry {
  path: string
  narSize?: number
}

/** Output names Nix appends to store path names (hello-2.12-man): not part of the version. */
const OUTPUT_SUFFIXES = new Set([
  'bin',
  'out',
  'dev',
  'lib',
  'man',
  'doc',
  'info',
  'debug',
  'static',
  'devdoc',
  'modules',
  'dist',
  'python',
  'terminfo',
  'getent',
  'sandbox',
  'firmware',
  'drivers'
])

/**
 * Splits a store path name into package name and version, as nix's parseDrvName does: the version
 * starts at the first "-" followed by a digit. A trailing output name (-man, -dev, ...) is dropped
 * from the version. Names without a version get version "".
 */
export function parseName(name: string): { pname: string; version: string } {
  const m = /-(?=[0-9])/.exec(name)
  if (!m) return { pname: name, version: '' }
  const pname = name.slice(0, m.index)
  const parts = name.slice(m.index + 1).split('-')
  while (parts.length > 1 && OUTPUT_SUFFIXES.has(parts[parts.length - 1])) parts.pop()
  return { pname, version: parts.join('-') }
}

export interface VersionChange {
  pname: string
  before: string[]
  after: string[]
}

export interface ClosureDiff {
  added: Array<{ pname: string; versions: string[] }>
  removed: Array<{ pname: string; versions: string[] }>
  changed: VersionChange[]
  sizeBefore?: number
  sizeAfter?: number
  pathsBefore: number
  pathsAfter: number
  /** Paths without a version that differ (configuration files, units, …): how many. */
  otherPathsChanged: number
  /** Those paths by name (added or removed), sorted by name, with their sizes when known. */
  otherPaths: Array<{ change: '+' | '−'; name: string; narSize?: number }>
  /** The system itself (the toplevel) when it changed: shown once, as the system's change. */
  system?: { before: string; after: string }
}

/** The two systems' toplevels: kept out of the package lists (they are the change, not a package). */
export interface Toplevels {
  before?: string
  after?: string
}

function versionsByName(paths: string[]): Map<string, Set<string>> {
  const m = new Map<string, Set<string>>()
  for (const p of paths) {
    const { pname, version } = parseName(storePathName(p))
    if (version === '') continue
    if (!m.has(pname)) m.set(pname, new Set())
    m.get(pname)!.add(version)
  }
  return m
}

const sorted = (s: Set<string> | undefined): string[] =>
  [...(s ?? [])].sort((a, b) => a.localeCompare(b, 'en', { numeric: true }))

export function diffClosures(
  before: ClosureEntry[],
  after: ClosureEntry[],
  toplevels: Toplevels = {}
): ClosureDiff {
  const isToplevel = (p: string): boolean => p === toplevels.before || p === toplevels.after
  const packagesBefore = before.filter(e => !isToplevel(e.path))
  const packagesAfter = after.filter(e => !isToplevel(e.path))
  const b = versionsByName(packagesBefore.map(e => e.path))
  const a = versionsByName(packagesAfter.map(e => e.path))
  const names = [...new Set([...b.keys(), ...a.keys()])].sort()
  const diff: ClosureDiff = {
    added: [],
    removed: [],
    changed: [],
    pathsBefore: before.length,
    pathsAfter: after.length,
    otherPathsChanged: 0,
    otherPaths: []
  }
  for (const n of names) {
    const vb = sorted(b.get(n))
    const va = sorted(a.get(n))
    if (vb.length === 0) diff.added.push({ pname: n, versions: va })
    else if (va.length === 0) diff.removed.push({ pname: n, versions: vb })
    else if (vb.join() !== va.join()) diff.changed.push({ pname: n, before: vb, after: va })
  }
  diff.otherPaths = otherPaths(packagesBefore, packagesAfter)
  diff.otherPathsChanged = diff.otherPaths.length
  if (toplevels.before && toplevels.after && toplevels.before !== toplevels.after)
    diff.system = { before: toplevels.before, after: toplevels.after }
  const size = (es: ClosureEntry[]): number | undefined =>
    es.every(e => e.narSize !== undefined) ? es.reduce((s, e) => s + (e.narSize ?? 0), 0) : undefined
  diff.sizeBefore = size(before)
  diff.sizeAfter = size(after)
  return diff
}

/** Paths without a version in one closure and not the other, by name (then removed before added). */
function otherPaths(before: ClosureEntry[], after: ClosureEntry[]): ClosureDiff['otherPaths'] {
  const isOther = (p: string): boolean => parseName(storePathName(p)).version === ''
  const bPaths = new Set(before.map(e => e.path))
  const aPaths = new Set(after.map(e => e.path))
  const only = (es: ClosureEntry[], other: Set<string>, change: '+' | '−') =>
    es
      .filter(e => isOther(e.path) && !other.has(e.path))
      .map(e => ({ change, name: storePathName(e.path), narSize: e.narSize }))
  return [...only(before, aPaths, '−'), ...only(after, bPaths, '+')].sort(
    (x, y) => x.name.localeCompare(y.name) || (x.change === '−' ? -1 : 1)
  )
}

/** Units switch-to-configuration dry-activate says it would touch, by action. */
export function parseDryActivate(output: string): Array<{ action: string; units: string[] }> {
  const out: Array<{ action: string; units: string[] }> = []
  for (const line of output.split('\n')) {
    const m =
      /^would (stop|NOT stop|restart|reload|start)(?: the following)?(?: changed)?(?: user)? units?: (.*)$/.exec(
        line.trim()
      )
    if (m) {
      const action = /user units/.test(line)
        ? `${m[1]} (user)`
        : m[1] === 'NOT stop'
          ? 'keep running (changed)'
          : m[1]
      out.push({
        action,
        units: m[2]
          .split(/,\s*/)
          .map(u => u.trim())
          .filter(Boolean)
      })
    }
  }
  return out
}

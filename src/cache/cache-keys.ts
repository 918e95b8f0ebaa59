import { createHash } from 'crypto'
import { existsSync, readFileSync } from 'fs'
import * as path from 'path'

/**
 * Cache keys for the runner's store. One entry per run (a unique save key), restored from most to
 * least specific: the same inputs (flake.lock) first, then anything for this platform, so a lock bump
 * still starts from the previous entry.
 */
export interface CacheKeys {
  key: string
  restoreKeys: string[]
}

export function cacheKeys(prefix: string, inputsHash: string, runId: string): CacheKeys {
  return { key: `${prefix}-${inputsHash}-${runId}`, restoreKeys: [`${prefix}-${inputsHash}-`, `${prefix}-`] }
}

/** The directory of a local flake reference (".", "./x", "/abs", "path:/abs?…"), else undefined. */
export function localFlakeDir(ref: string, cwd: string): string | undefined {
  const m = /^(?:path:|git\+file:\/\/)?([^?#]*)/.exec(ref)
  const p = m?.[1] ?? ''
  if (
    ref.startsWith('path:') ||
    ref.startsWith('git+file://') ||
    p.startsWith('/') ||
    p === '.' ||
    p.startsWith('./') ||
    p.startsWith('../')
  )
    return path.resolve(cwd, p)
  return undefined
}

/** A short hash of what decides the build's inputs: flake.lock when the flake is local, else the reference. */
export function inputsHash(ref: string, cwd: string = process.cwd()): string {
  const dir = localFlakeDir(ref, cwd)
  const lock = dir ? path.join(dir, 'flake.lock') : undefined
  const content = lock && existsSync(lock) ? readFileSync(lock) : Buffer.from(`ref:${ref}`)
  return createHash('sha256').update(content).digest('hex').slice(0, 16)
}

import * as core from '@actions/core'
import { promises as fs } from 'fs'
import * as path from 'path'
import { formatBytes } from '../log/format'
import { errorMessage } from '../errors'
import { RunnerNix } from '../nix/nix'
import { randomBytes } from 'crypto'
import type { Mode } from '../modes'
import type { Source } from '../nix/source'
import { SigningKey } from './signing'
import { extractCacheArchive } from './extract'
import { info } from '../log/untrusted'
import { runCommand, tail } from '../run-command'
import { cacheKeys, CacheKeys, inputsHash } from './cache-keys'
import { isStorePath } from '../nix/store-path'
import { withPrivateVariablesUnlisted } from '../secrets'

/**
 * Keeps the runner's Nix store warm between runs without ever untarring into /nix/store (which is
 * what breaks other caches: permission errors, "File exists", paths present but not registered in
 * the Nix database). Instead:
 *   save    (post step): `nix copy --to file://DIR?compression=zstd` of the system's closure plus
 *           the outputs built in this run, into a fresh directory: a binary cache holding only what
 *           the current system needs, saved with @actions/cache under a unique key;
 *   restore (main step, after evaluation): @actions/cache restores DIR, then `nix copy --from` it
 *           imports the paths through Nix itself, so they are registered like any substituted path.
 * Importing needs a trusted Nix user (root with single-user Nix, or trusted-users for a daemon);
 * otherwise the restore is skipped with a warning and the build proceeds.
 *
 * What an entry is trusted for: any job that can write to this cache scope can write an entry under
 * any key (a default-branch pull_request_target or workflow_run job running a pull request's code,
 * say), and a restored path is used as it is. So with signing-key every path saved is signed with
 * it and a restore imports only paths that carry its signature (Nix checks them against that one
 * public key); without one, only a build on a GitHub-hosted runner restores, unverified (see
 * unverifiedRestoreRefused). And an entry is unpacked by extract.ts, not by @actions/cache's tar -P.
 */

/**
 * Where the binary cache lives while it is saved or restored, as @actions/cache is given it. That
 * path's text is hashed into the entry's version, and the archive's entries are stored relative to
 * the workspace and unpacked relative to the restoring run's workspace: a path relative to the
 * workspace is the same text on every runner and lands in the same place on each (an absolute path
 * under RUNNER_TEMP differs between runner services, so they never shared an entry). It exists only
 * during the restore and the save (a `path:.` flake must not copy it into the store).
 */
export const CACHE_PATH = '.nix-deploy-action-store-cache'

function workspace(): string {
  return path.resolve(process.env.GITHUB_WORKSPACE || process.cwd())
}

export function cacheDir(): string {
  return path.join(workspace(), CACHE_PATH)
}

/** Node's own require, in the bundle (webpack leaves what it loads out of dist/index.js). */
declare const __non_webpack_require__: NodeJS.Require

/**
 * @actions/cache, loaded when the cache is first used. It and what it needs (the Azure storage and
 * HTTP clients) are most of the action's code: a bundle of its own, dist/cache/index.js beside
 * dist/index.js (scripts/bundle.js), so that a run that caches nothing neither runs nor even
 * parses it. Only the bundled action calls this (the e2e cache suites); unit tests do not.
 */
async function actionsCache(): Promise<
  Pick<typeof import('@actions/cache'), 'isFeatureAvailable' | 'restoreCache' | 'saveCache'>
> {
  const { cache, tar } = __non_webpack_require__(
    path.join(__dirname, 'cache', 'index.js')
  ) as typeof import('./actions-cache-bundle')
  // Its restore unpacks with `tar -P` in the workspace, before anything is verified: ours instead
  // (see extract.ts). restoreCache calls the module's export at call time, so replacing it works;
  // the e2e cache suite fails if it ever does not (an entry with absolute names writes nothing).
  ;(tar as unknown as { extractTar: (archive: string) => Promise<void> }).extractTar = archive =>
    extractCacheArchive(archive, workspace(), CACHE_PATH)
  // Its children (tar, zstd) never see the runtime token, which it reads itself.
  return {
    isFeatureAvailable: cache.isFeatureAvailable,
    restoreCache: (...args) => withPrivateVariablesUnlisted(() => cache.restoreCache(...args)),
    saveCache: (...args) => withPrivateVariablesUnlisted(() => cache.saveCache(...args))
  }
}

/**
 * Whether the runner has a GitHub Actions cache service. Without either URL the runner gives it,
 * isFeatureAvailable says no whatever else is set (a unit test holds @actions/cache to that): it is
 * asked only when one is there, so a run without a cache service never loads dist/cache/. A
 * dist/cache/ that cannot be loaded is thrown, not taken for "no cache service".
 */
export async function cacheServiceAvailable(env: NodeJS.ProcessEnv = process.env): Promise<boolean> {
  if (!env.ACTIONS_CACHE_URL && !env.ACTIONS_RESULTS_URL) return false
  const cache = await actionsCache()
  try {
    return cache.isFeatureAvailable()
  } catch {
    return false
  }
}

/** A .narinfo is a few hundred bytes; a larger file is not one this action saved. */
const MAX_NARINFO_BYTES = 1024 * 1024

/** Store paths in a binary cache directory (from its .narinfo files: regular ones, of narinfo size). */
async function cachedPaths(dir: string): Promise<string[]> {
  const names = await fs.readdir(dir).catch(() => [] as string[])
  const paths: string[] = []
  for (const n of names.filter(f => f.endsWith('.narinfo'))) {
    const file = path.join(dir, n)
    const st = await fs.lstat(file)
    if (!st.isFile() || st.size > MAX_NARINFO_BYTES) continue
    const m = /^StorePath: (\/nix\/store\/\S+)$/m.exec(await fs.readFile(file, 'utf8'))
    if (m) paths.push(m[1])
  }
  return paths
}

export interface RestoreOutcome {
  hit: boolean
  matchedKey?: string
  paths: number
  bytes: number
  ms: number
}

/**
 * Runs `fn` with the cache directory, empty at the start (a leftover of an interrupted run is
 * removed) and removed at the end, whatever happened.
 */
async function inFreshCacheDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = cacheDir()
  await fs.rm(dir, { recursive: true, force: true })
  try {
    return await fn(dir)
  } finally {
    await fs.rm(dir, { recursive: true, force: true })
  }
}

/** Restores the store cache; what went wrong (the build goes on without it) goes to `warn`. */
export function restoreStore(
  nix: RunnerNix,
  key: string,
  restoreKeys: string[],
  warn: (warning: string) => void,
  signingKey?: SigningKey
): Promise<RestoreOutcome> {
  return inFreshCacheDir(dir => restoreInto(nix, dir, { key, restoreKeys, warn, signingKey }))
}

/**
 * `nix copy --from` the cache directory: with a signing key, only paths signed by it (its public key
 * is the only trusted one for this copy, and signatures are required whatever nix.conf says);
 * without one, unchecked.
 */
function importArgs(nix: RunnerNix, dir: string, paths: string[], signingKey?: SigningKey): string[] {
  const check = signingKey
    ? ['--option', 'require-sigs', 'true', '--option', 'trusted-public-keys', signingKey.publicKey]
    : ['--no-check-sigs']
  return [...nix.nixArgs(), 'copy', ...check, '--from', `file://${dir}`, ...paths]
}

async function restoreInto(
  nix: RunnerNix,
  dir: string,
  {
    key,
    restoreKeys,
    warn,
    signingKey
  }: { key: string; restoreKeys: string[]; warn: (warning: string) => void; signingKey?: SigningKey }
): Promise<RestoreOutcome> {
  const started = Date.now()
  let matchedKey: string | undefined
  try {
    matchedKey = await (await actionsCache()).restoreCache([CACHE_PATH], key, restoreKeys)
  } catch (e) {
    warn(`Restoring the Nix store cache failed (the build goes on without it): ${errorMessage(e)}`)
  }
  if (!matchedKey) return { hit: false, paths: 0, bytes: 0, ms: Date.now() - started }
  let paths: string[]
  let bytes: number
  try {
    paths = await cachedPaths(dir)
    bytes = await dirSize(dir)
  } catch (e) {
    // Anyone who can write the repository's cache could leave an entry that cannot be read: the
    // build starts cold (an unexpected error would fail every later run that restores it).
    warn(`The store cache entry ${matchedKey} could not be read (nothing restored): ${errorMessage(e)}`)
    return { hit: false, matchedKey, paths: 0, bytes: 0, ms: Date.now() - started }
  }
  if (paths.length === 0) {
    warn(
      `The store cache entry ${matchedKey} holds no store paths (not one this action saved): nothing restored.`
    )
    return { hit: false, matchedKey, paths: 0, bytes, ms: Date.now() - started }
  }
  const r = await runCommand('nix', importArgs(nix, dir, paths, signingKey))
  if (r.exitCode !== 0) {
    warn(
      signingKey && /signature/.test(r.stderr)
        ? `The store cache entry ${matchedKey} holds paths not signed by signing-key (${signingKey.name}), so it was not imported and the build starts cold: someone who can write to this repository's cache wrote it, or it was saved with another key. Delete the entry (gh cache delete ${matchedKey}) if this repeats. Nix said: ${tail(r.stderr, 2)}`
        : `Importing the restored store cache failed, so the build starts cold: ${tail(r.stderr, 3)}. Importing needs a trusted Nix user (root, or trusted-users in nix.conf).`
    )
    return { hit: false, matchedKey, paths: 0, bytes, ms: Date.now() - started }
  }
  info(
    `Restored ${paths.length} store paths (${formatBytes(bytes)}) from cache ${matchedKey}${signingKey ? `, each verified against ${signingKey.name}` : ''}`
  )
  return { hit: true, matchedKey, paths: paths.length, bytes, ms: Date.now() - started }
}

async function dirSize(dir: string): Promise<number> {
  let total = 0
  for (const e of await fs.readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = path.join(dir, e.name)
    total += e.isDirectory() ? await dirSize(p) : (await fs.stat(p)).size
  }
  return total
}

export interface SaveOutcome {
  saved: boolean
  reason?: string
  paths?: number
  bytes?: number
  ms: number
}

/**
 * Exports `paths` (with their closures) into a fresh binary cache directory, saves it, removes it.
 * With a signing key, Nix signs every path it writes there (the store URI's secret-key, read from a
 * pipe: never a file or an argument).
 */
export function saveStore(
  nix: RunnerNix,
  key: string,
  paths: string[],
  signingKey?: SigningKey
): Promise<SaveOutcome> {
  return inFreshCacheDir(dir => saveFrom(nix, dir, key, paths, signingKey))
}

async function saveFrom(
  nix: RunnerNix,
  dir: string,
  key: string,
  paths: string[],
  signingKey?: SigningKey
): Promise<SaveOutcome> {
  const started = Date.now()
  await fs.mkdir(dir, { recursive: true })
  const store = `file://${dir}?compression=zstd${signingKey ? '&secret-key=/dev/fd/3' : ''}`
  const r = await runCommand('nix', [...nix.nixArgs(), 'copy', '--to', store, ...paths], {
    secretFile: signingKey?.secret
  })
  if (r.exitCode !== 0)
    return {
      saved: false,
      reason: `nix copy to the cache directory failed: ${tail(r.stderr, 3)}`,
      ms: Date.now() - started
    }
  const count = (await cachedPaths(dir)).length
  const bytes = await dirSize(dir)
  try {
    // @actions/cache finds the path relative to the working directory: the workspace, as on a runner.
    process.chdir(workspace())
    await (await actionsCache()).saveCache([CACHE_PATH], key)
  } catch (e) {
    return { saved: false, reason: `saving the cache failed: ${errorMessage(e)}`, ms: Date.now() - started }
  }
  return { saved: true, paths: count, bytes, ms: Date.now() - started }
}

/** What the post step needs to save the cache (kept in the action's state). */
export interface PendingSave {
  key: string
  paths: string[]
  settings: Array<[string, string]>
  /** Saved under a signing-key's cache keys: the post step signs it with the key (read again there). */
  signed: boolean
}

/**
 * The main step's PendingSave as the post step reads it back, or why it is not one. State is a file
 * the runner also fills from `save-state` commands in the step's output: only store paths, a key of
 * plain characters, and the Nix settings the post step reads from nix-options itself.
 */
export function readPendingSave(raw: string, settings: Array<[string, string]>): PendingSave | string {
  let s: unknown
  try {
    s = JSON.parse(raw)
  } catch {
    return 'its state is not JSON'
  }
  const { key, paths, signed } = (s ?? {}) as Partial<Record<keyof PendingSave, unknown>>
  if (typeof key !== 'string' || !/^[A-Za-z0-9._-]+$/.test(key)) return 'its key is not a cache key'
  if (
    !Array.isArray(paths) ||
    paths.length === 0 ||
    !paths.every(p => typeof p === 'string' && isStorePath(p))
  )
    return 'its paths are not store paths'
  if (typeof signed !== 'boolean') return 'it does not say whether it is signed'
  if (JSON.stringify((s as PendingSave).settings) !== JSON.stringify(settings))
    return "its Nix settings are not this step's nix-options"
  return { key, paths: paths as string[], settings, signed }
}

/** What a run's restore trusts: its mode and signing-key (the slice of the inputs it reads). */
export interface CacheTrustInputs {
  mode: Mode
  signingKey?: SigningKey
}

/** What the cache keys are made of. */
export interface CacheKeyInputs {
  cacheKey?: string
  signingKey?: SigningKey
  source: Source
}

/** What the main step's restore found, for the report (DeployReport.cache). */
export interface StoreCacheRestore {
  available: boolean
  hit: boolean
  key?: string
  paths?: number
  bytes?: number
  ms?: number
  /** Why nothing was restored, when the run would not trust an entry (unverifiedRestoreRefused). */
  refused?: string
  /** The signing key's name whose signature every restored path carried. */
  signedBy?: string
}

let runKeys: CacheKeys | undefined
/**
 * This run's keys (one unique save key per run, computed once). Entries saved with a signing key
 * have keys of their own (its fingerprint after the prefix), so a signed run never picks an
 * unsigned entry, however new; an entry someone else wrote there fails the signature check.
 */
export function storeCacheKeys(inputs: CacheKeyInputs, hostSystem: string): CacheKeys {
  const runId = `${process.env.GITHUB_RUN_ID ?? Date.now()}-${process.env.GITHUB_RUN_ATTEMPT ?? '1'}-${randomBytes(3).toString('hex')}`
  const prefix = inputs.cacheKey ?? `nix-deploy-${hostSystem}`
  runKeys ??= cacheKeys(
    inputs.signingKey ? `${prefix}-signed-${inputs.signingKey.fingerprint}` : prefix,
    inputsHash(
      inputs.source.kind === 'flake'
        ? inputs.source.flake.ref
        : inputs.source.kind === 'plan'
          ? inputs.source.label
          : `${inputs.source.nixpkgs} ${inputs.source.label}`
    ),
    runId
  )
  return runKeys
}

/**
 * Why this run restores nothing, or undefined when it may. Only signing-key verifies an entry.
 * Without it, a run that reaches a target (it runs the system there, dry-activate too) restores
 * nothing, and a build only on a GitHub-hosted runner: a self-hosted runner keeps its store, so an
 * entry's paths would still be there, unverified, for a later deploy on it (which would also sign
 * them into the cache).
 */
export function unverifiedRestoreRefused(
  inputs: CacheTrustInputs,
  env: NodeJS.ProcessEnv = process.env
): string | undefined {
  if (inputs.signingKey) return undefined
  if (inputs.mode !== 'build')
    return 'not restored: a deploy imports only entries signed by signing-key, and none is set (any job that can write to this cache could have written an entry)'
  if (env.RUNNER_ENVIRONMENT !== 'github-hosted')
    return "not restored: without signing-key only a GitHub-hosted runner restores (its store is thrown away after the job); this runner's store outlives the job, and a later deploy on it would use what an unverified entry put there"
  return undefined
}

/** The main step's restore, with the report's view of it. Asks isFeatureAvailable first, so there is one warning, ours. */
export async function restoreForRun(
  nix: RunnerNix,
  keys: CacheKeys,
  inputs: CacheTrustInputs,
  warn: (warning: string) => void
): Promise<StoreCacheRestore> {
  const available = await cacheServiceAvailable().catch((e: unknown) => {
    warn(
      `The store cache's code (dist/cache/index.js) could not be loaded, so the Nix store is not cached between runs: ${errorMessage(e)}`
    )
    return undefined
  })
  if (available === undefined) return { available: false, hit: false }
  if (!available) {
    warn(
      'No GitHub Actions cache service here (e.g. a local run or a GHES without cache): the Nix store is not cached between runs.'
    )
    return { available: false, hit: false }
  }
  const refused = unverifiedRestoreRefused(inputs)
  if (refused) {
    info(`Store cache ${refused}. Set signing-key to restore it in deploys (docs/store-cache.md).`)
    return { available: true, hit: false, refused }
  }
  core.startGroup('Restore the Nix store cache')
  const r = await restoreStore(nix, keys.key, keys.restoreKeys, warn, inputs.signingKey).finally(() =>
    core.endGroup()
  )
  return {
    available: true,
    hit: r.hit,
    key: r.matchedKey,
    paths: r.paths,
    bytes: r.bytes,
    ms: r.ms,
    signedBy: inputs.signingKey?.name
  }
}

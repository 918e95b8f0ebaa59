/**
 * A fleet past one job (issue #35): the build publishes every machine's closure to a binary cache
 * the user names (`publish-to`), signed with signing-key, so that shard jobs' targets substitute
 * from it instead of the runner copying to each. Nix does the upload (`nix copy --to`), signing
 * each path as it writes it (the store URI's secret-key, read from a pipe: the key never touches
 * a file or an argument).
 */
import { SigningKey } from './signing'
export { publishUriProblem } from '../nix/store-uri'
import { STALLED_CACHE_BOUNDS } from '../nix/store-uri'
import type { BinaryCache } from '../nix/deploy-plan'
import { ActionError } from '../errors'
import { runCommand } from '../run-command'
import { RunnerNix } from '../nix/nix'
import { signableInCache } from '../nix/closure'

/** The store URI Nix writes to: the user's, signing with the key on fd 3. */
export function signingStoreUri(uri: string): string {
  return `${uri}${uri.includes('?') ? '&' : '?'}secret-key=/dev/fd/3`
}

/** Uploads the closures of `toplevels` to `uri`, each path signed with `key`; how long it took (ms). */
export async function publishClosures(
  nix: RunnerNix,
  uri: string,
  toplevels: string[],
  key: SigningKey
): Promise<number> {
  const started = Date.now()
  const r = await runCommand('nix', [...nix.nixArgs(), 'copy', '--to', signingStoreUri(uri), ...toplevels], {
    secretFile: key.secret
  })
  if (r.exitCode !== 0)
    throw new ActionError(
      `publishing to ${uri} failed: ${r.stderr.trim().slice(-500)}`,
      'Check that the runner can write to the cache (for S3: credentials in the environment, the bucket and region in the URI), then re-run.',
      'build'
    )
  await signWhatItHeld(nix, uri, toplevels, key)
  return Date.now() - started
}

/**
 * nix copy skips what the cache has already, and with it the signature: a path published before
 * under another key (a rotated key, a bucket shared with another pipeline) would lack this one,
 * and every Pi would refuse it. Such a path gets this key's signature, but only where the cache
 * holds what this build made (its NAR hash, size and references): one that someone else put there
 * under the same name is never signed, and the publish fails naming it.
 */
async function signWhatItHeld(
  nix: RunnerNix,
  uri: string,
  toplevels: string[],
  key: SigningKey
): Promise<void> {
  const list = (store: string[], sigs: string[]) =>
    runCommand('nix', [
      ...nix.nixArgs(),
      'path-info',
      ...store,
      '--json',
      ...sigs,
      '--recursive',
      ...toplevels
    ])
  const [local, cached] = await Promise.all([list([], []), list(['--store', uri], ['--sigs'])])
  for (const r of [local, cached])
    if (r.exitCode !== 0)
      throw new ActionError(
        `reading back what ${uri} holds of this build failed: ${r.stderr.trim().slice(-500)}`,
        'Check that the runner can read the cache it published to, then re-run.',
        'build'
      )
  const { toSign, foreign } = signableInCache(local.stdout, cached.stdout, key.name)
  if (foreign.length > 0)
    throw new ActionError(
      `${uri} holds ${foreign.length} of this build's store paths with another content than this build's, without signing-key's signature (${foreign.slice(0, 3).join(', ')}${foreign.length > 3 ? ', …' : ''}): they are not signed, and no Pi would take them`,
      'Someone else published those paths there first. Publish to a cache that only this pipeline writes to (or remove those paths from it), then re-run.',
      'build'
    )
  if (toSign.length === 0) return
  const signed = await runCommand(
    'nix',
    [...nix.nixArgs(), 'store', 'sign', '--store', uri, '--key-file', '/dev/fd/3', ...toSign],
    { secretFile: key.secret }
  )
  if (signed.exitCode !== 0)
    throw new ActionError(
      `signing ${toSign.length} paths ${uri} held already with signing-key failed: ${signed.stderr.trim().slice(-500)}`,
      'Those paths were in the cache before this run, signed with another key. Check that the runner can write to the cache (it rewrites their .narinfo files), then re-run.',
      'build'
    )
}

/**
 * Fetches `paths` (with their closures) from the binary cache `cache` into the runner's store:
 * what a shard job's target could not fetch itself, before the runner copies it. The paths must be
 * signed with the cache's key (Nix checks each; the key is trusted for this call only).
 */
export async function fetchFromCache(nix: RunnerNix, cache: BinaryCache, paths: string[]): Promise<void> {
  const r = await runCommand('nix', [
    // Before nix-options, which may set them otherwise (a slow proxy).
    ...STALLED_CACHE_BOUNDS,
    ...nix.nixArgs(),
    'copy',
    // After them, whatever they or the runner's nix.conf say: the target imports what the runner sends unchecked.
    '--option',
    'require-sigs',
    'true',
    '--option',
    'extra-trusted-public-keys',
    cache.publicKey,
    '--from',
    cache.uri,
    ...paths
  ])
  if (r.exitCode !== 0)
    throw new ActionError(
      `fetching ${paths.length} paths from ${cache.uri} on the runner failed: ${r.stderr.trim().slice(-500)}`,
      "Neither the target nor the runner could fetch the closure from the plan's binary cache: check that both reach it (for S3: the runner's credentials in the environment), or re-run the build job that published it.",
      'copy'
    )
}

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
  // nix copy skips what the cache has already, and with it the signature: a path published before
  // under another key (a rotated key, a bucket shared with another pipeline) would lack this one,
  // and every Pi would refuse it. Signing adds this key's signature where it is missing only.
  const signed = await runCommand(
    'nix',
    [
      ...nix.nixArgs(),
      'store',
      'sign',
      '--store',
      uri,
      '--key-file',
      '/dev/fd/3',
      '--recursive',
      ...toplevels
    ],
    { secretFile: key.secret }
  )
  if (signed.exitCode !== 0)
    throw new ActionError(
      `signing what ${uri} held already with signing-key failed: ${signed.stderr.trim().slice(-500)}`,
      'Some paths were in the cache before this run, signed with another key. Check that the runner can write to the cache (it rewrites their .narinfo files), then re-run.',
      'build'
    )
  return Date.now() - started
}

/**
 * Fetches `paths` (with their closures) from the binary cache `cache` into the runner's store:
 * what a shard job's target could not fetch itself, before the runner copies it. The paths must be
 * signed with the cache's key (Nix checks each; the key is trusted for this call only).
 */
export async function fetchFromCache(nix: RunnerNix, cache: BinaryCache, paths: string[]): Promise<void> {
  const r = await runCommand('nix', [
    ...nix.nixArgs(),
    'copy',
    // Whatever the runner's nix.conf says: the target imports what the runner sends unchecked.
    '--option',
    'require-sigs',
    'true',
    ...STALLED_CACHE_BOUNDS,
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

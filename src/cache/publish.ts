/**
 * A fleet past one job (issue #35): the build publishes every machine's closure to a binary cache
 * the user names (`publish-to`), signed with signing-key, so that shard jobs' targets substitute
 * from it instead of the runner copying to each. Nix does the upload (`nix copy --to`), signing
 * each path as it writes it (the store URI's secret-key, read from a pipe: the key never touches
 * a file or an argument).
 */
import { SigningKey } from './signing'
import { ActionError } from '../errors'
import { runCommand } from '../run-command'
import { RunnerNix } from '../nix/nix'

/** What the cache URI of publish-to may be: the stores Nix uploads to, nothing it would run. */
const PUBLISH_SCHEMES = ['s3://', 'file://', 'http://', 'https://']

/** Why `uri` cannot be publish-to, or undefined when it can. */
export function publishUriProblem(uri: string): string | undefined {
  if (!PUBLISH_SCHEMES.some(s => uri.startsWith(s)))
    return `publish-to: ${JSON.stringify(uri)} is not a binary cache Nix uploads to (${PUBLISH_SCHEMES.join(', ')})`
  if (/\s/.test(uri)) return 'publish-to: no spaces or line breaks'
  if (/[?&]secret-key=/.test(uri))
    return 'publish-to: no secret-key= in it: the paths are signed with signing-key, read from a pipe'
  return undefined
}

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
  return Date.now() - started
}

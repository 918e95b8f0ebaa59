/** Binary cache URIs as publish-to takes them and a deploy plan carries them. */

/** What the cache URI of publish-to may be: the stores Nix uploads to, nothing it would run. */
const PUBLISH_SCHEMES = ['s3://', 'file://', 'http://', 'https://']

/** Why `uri` cannot be publish-to, or undefined when it can. */
export function publishUriProblem(uri: string): string | undefined {
  if (!PUBLISH_SCHEMES.some(s => uri.startsWith(s)))
    return `publish-to: ${JSON.stringify(uri)} is not a binary cache Nix uploads to (${PUBLISH_SCHEMES.join(', ')})`
  if (/\s/.test(uri)) return 'publish-to: no spaces or line breaks'
  // The characters a deploy user's gate takes in the URI (nixos/deploy-user/gate.sh, cache_uri).
  if (/[^A-Za-z0-9._~:/?&=%@+,[\]-]/.test(uri))
    return `publish-to: ${JSON.stringify(uri)} has a character other than letters, digits and ._~:/?&=%@+,[]- (percent-encode it)`
  if (/[?&]secret-key=/.test(uri))
    return 'publish-to: no secret-key= in it: the paths are signed with signing-key, read from a pipe'
  // The same URI is a substituter on every target, as root (deploy-plan): only settings of where
  // and how to store, none that Nix would trust or write elsewhere by (trusted=, local-nar-cache=).
  const query = uri.includes('?') ? uri.slice(uri.indexOf('?') + 1) : ''
  for (const pair of query.split('&').filter(Boolean)) {
    const name = pair.split('=')[0]
    if (!STORE_SETTINGS.includes(name))
      return `publish-to: the store setting ${JSON.stringify(name)} is not one it takes (${STORE_SETTINGS.join(', ')})`
  }
  return undefined
}

/** The settings of an S3 or HTTP binary cache's URI that say where and how it stores. */
export const STORE_SETTINGS = [
  'region',
  'endpoint',
  'scheme',
  'profile',
  'priority',
  'want-mass-query',
  'compression',
  'compression-level',
  'parallel-compression',
  'narinfo-compression',
  'ls-compression',
  'log-compression',
  'write-nar-listing',
  'multipart-upload',
  'buffer-size'
]

/**
 * A cache that accepts the connection and then sends nothing (a hung server, a VPN that drops what
 * it carries) ends a download after half a minute, not Nix's default five; a cache that cannot be
 * reached, after 10 s.
 */
export const STALLED_CACHE_BOUNDS = [
  '--option',
  'stalled-download-timeout',
  '30',
  '--option',
  'connect-timeout',
  '10'
]

/** Binary cache URIs as publish-to takes them and a deploy plan carries them. */

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

import { publishUriProblem, signingStoreUri } from '../../src/cache/publish'

describe('publish-to', () => {
  it('takes the binary caches Nix uploads to', () => {
    for (const uri of [
      's3://pis?region=eu-west-1&endpoint=minio.lan:9000',
      'file:///srv/cache',
      'https://cache.lan'
    ])
      expect(publishUriProblem(uri)).toBeUndefined()
  })
  it('refuses what is not one, spaces, and a key in the URI (signing-key signs, from a pipe)', () => {
    expect(publishUriProblem('ssh://pi')).toMatch(/is not a binary cache Nix uploads to/)
    expect(publishUriProblem('file:///srv/cache --option x y')).toBe('publish-to: no spaces or line breaks')
    expect(publishUriProblem('file:///srv/c?secret-key=/etc/k')).toMatch(/no secret-key=/)
    // A deploy plan's URI is a substituter on every target, as root: nothing Nix would trust by.
    expect(publishUriProblem('https://cache.lan?trusted=1')).toMatch(
      /the store setting "trusted" is not one it takes/
    )
    expect(publishUriProblem('https://cache.lan?priority=10&local-nar-cache=/etc')).toMatch(
      /"local-nar-cache"/
    )
    expect(publishUriProblem('s3://pis?region=eu-west-1&endpoint=minio.lan:9000&scheme=http')).toBeUndefined()
  })
  it('signs with the key on fd 3, whatever the URI already says', () => {
    expect(signingStoreUri('file:///srv/cache')).toBe('file:///srv/cache?secret-key=/dev/fd/3')
    expect(signingStoreUri('s3://pis?region=x')).toBe('s3://pis?region=x&secret-key=/dev/fd/3')
  })
})

describe('publish-to among the inputs', () => {
  const { inputs } = require('./read-inputs') as typeof import('./read-inputs')
  const SECRET =
    'test-1:WCnin4rkjEK4VeBngQKzCRwMQkLxXAcJiQpxCmKP+SstWg+dIzjtuQD3U9ZIB6TApoCNLMSYVQQVOPJzPelVHA=='
  const build = { flake: '.#pi3', mode: 'build', 'publish-to': 'file:///srv/cache', 'signing-key': SECRET }
  it('is read with its shards (1 unless given)', () => {
    expect(inputs(build).publish).toEqual({ uri: 'file:///srv/cache', shards: 1 })
    expect(inputs({ ...build, shards: '20' }).publish).toEqual({ uri: 'file:///srv/cache', shards: 20 })
    expect(inputs({ flake: '.#pi3', mode: 'build' }).publish).toBeUndefined()
  })
  it('is for a build that signs: not with a mode that deploys, not without signing-key', () => {
    expect(() => inputs({ ...build, mode: 'switch' })).toThrow(/publish-to is for mode build/)
    expect(() => inputs({ ...build, 'signing-key': '' })).toThrow(/publish-to needs signing-key/)
    expect(() => inputs({ ...build, shards: '0' })).toThrow(/shards/)
  })
})

describe('what publish-to signs of what the cache held already', () => {
  const { signableInCache } = require('../../src/nix/closure') as typeof import('../../src/nix/closure')
  const P = (c: string, name: string): string => `/nix/store/${c.repeat(32)}-${name}`
  const [lib, app, top] = [P('l', 'lib'), P('a', 'app'), P('t', 'system')]
  const info = (path: string, narHash: string, references: string[], signatures?: string[]) => ({
    path,
    narHash,
    narSize: 100,
    references,
    ...(signatures ? { signatures } : {})
  })
  const local = JSON.stringify([
    info(lib, 'sha256:1lib', []),
    info(app, 'sha256:1app', [lib]),
    info(top, 'sha256:1top', [app, lib])
  ])
  it('signs what it holds as this build made it; skips what this key signed; never what it holds with another content', () => {
    const cached = JSON.stringify([
      info(lib, 'sha256:1lib', [], ['fleet-2:sig']), // signed by this key already
      info(app, 'sha256:1app', [lib], ['fleet-1:old']), // as built, under the old key
      info(top, 'sha256:0evil', [app, lib], ['other-1:sig']) // someone else's content
    ])
    expect(signableInCache(local, cached, 'fleet-2')).toEqual({ toSign: [app], foreign: [top] })
  })
  it('other references, or a path the cache lacks, are not this build’s either', () => {
    const cached = JSON.stringify([info(lib, 'sha256:1lib', []), info(app, 'sha256:1app', [])])
    expect(signableInCache(local, cached, 'fleet-2')).toEqual({ toSign: [lib], foreign: [app, top] })
  })
})

import { execFileSync } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { extractCacheArchive } from '../../src/cache/extract'

/**
 * A store cache entry's archive as someone who can write to the cache could make it: nothing lands
 * outside the cache directory, and an entry with anything but directories and regular files there
 * is refused. The archives are made with Python's tarfile (any member type and name) and zstd.
 */
const SUBTREE = '.nix-deploy-action-store-cache'
let dir: string
let workspace: string
let outside: string

/** A .tzst archive of `members`: [name, type, content or link target]. */
function archive(members: Array<[string, 'file' | 'dir' | 'symlink' | 'hardlink', string?]>): string {
  const tar = path.join(dir, 'cache.tar')
  const script = `
import io, json, sys, tarfile
with tarfile.open(sys.argv[1], 'w', format=tarfile.PAX_FORMAT) as t:
    for m in json.loads(sys.argv[2]):
        name, kind, data = (m + [None])[:3]
        info = tarfile.TarInfo(name)
        if kind == 'file':
            b = (data or '').encode(); info.size = len(b); t.addfile(info, io.BytesIO(b))
        elif kind == 'dir':
            info.type = tarfile.DIRTYPE; info.mode = 0o755; t.addfile(info)
        else:
            info.type = tarfile.SYMTYPE if kind == 'symlink' else tarfile.LNKTYPE; info.linkname = data; t.addfile(info)
`
  execFileSync('python3', ['-c', script, tar, JSON.stringify(members)])
  execFileSync('zstd', ['-q', '-f', '--rm', tar, '-o', path.join(dir, 'cache.tzst')])
  return path.join(dir, 'cache.tzst')
}

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-extract-'))
  workspace = path.join(dir, 'workspace')
  outside = path.join(dir, 'outside')
  fs.mkdirSync(workspace)
  fs.mkdirSync(outside)
  fs.writeFileSync(path.join(workspace, 'flake.nix'), 'the repository')
})
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }))

const listing = (d: string): string[] =>
  fs
    .readdirSync(d, { recursive: true, encoding: 'utf8' })
    .map(f => f.toString())
    .sort()

describe('extractCacheArchive', () => {
  it('unpacks what the action saves: its directory with narinfo and NAR files', async () => {
    const a = archive([
      [SUBTREE, 'dir'],
      [`${SUBTREE}/abc.narinfo`, 'file', 'StorePath: /nix/store/abc-x'],
      [`${SUBTREE}/nar`, 'dir'],
      [`${SUBTREE}/nar/abc.nar.zst`, 'file', 'nar']
    ])
    await extractCacheArchive(a, workspace, SUBTREE)
    expect(listing(workspace)).toEqual([
      SUBTREE,
      `${SUBTREE}/abc.narinfo`,
      `${SUBTREE}/nar`,
      `${SUBTREE}/nar/abc.nar.zst`,
      'flake.nix'
    ])
  })

  it('writes nothing outside the cache directory: absolute names, .., other paths of the workspace', async () => {
    const ok: [string, 'file', string] = [`${SUBTREE}/ok.narinfo`, 'file', 'StorePath: /nix/store/abc-x']
    // Absolute names and other paths are not taken (only the cache directory is extracted).
    await extractCacheArchive(
      archive([[`${outside}/absolute`, 'file', 'x'], ['flake.nix', 'file', 'replaced'], ok]),
      workspace,
      SUBTREE
    )
    expect(listing(outside)).toEqual([])
    expect(fs.readFileSync(path.join(workspace, 'flake.nix'), 'utf8')).toBe('the repository')
    expect(listing(workspace)).toEqual([SUBTREE, `${SUBTREE}/ok.narinfo`, 'flake.nix'])
    // A name with .. in the cache directory: tar skips it and fails, and the entry is refused.
    fs.rmSync(path.join(workspace, SUBTREE), { recursive: true })
    await expect(
      extractCacheArchive(
        archive([ok, [`${SUBTREE}/../../outside/relative`, 'file', 'x']]),
        workspace,
        SUBTREE
      )
    ).rejects.toThrow(/Member name contains '\.\.'/)
    expect(listing(outside)).toEqual([])
    expect(listing(workspace)).toEqual(['flake.nix'])
  })

  type Member = [string, 'file' | 'dir' | 'symlink' | 'hardlink', string?]
  const ok: Member = [`${SUBTREE}/ok.narinfo`, 'file', 'StorePath: /nix/store/abc-x']
  it.each([
    // tar makes a link whose target leaves the directory last (a placeholder first): the file
    // written through it fails.
    [
      'a link out, and a file written through it',
      [
        [`${SUBTREE}/out`, 'symlink', '/OUTSIDE'],
        [`${SUBTREE}/out/x`, 'file', 'x']
      ],
      /Not a directory/
    ],
    ['a link out', [[`${SUBTREE}/out`, 'symlink', '/OUTSIDE']], /holds a symlink \(out\)/],
    ['a relative link', [[`${SUBTREE}/rel`, 'symlink', 'ok.narinfo']], /holds a symlink \(rel\)/],
    ['a hard link', [[`${SUBTREE}/hard`, 'hardlink', `${SUBTREE}/ok.narinfo`]], /holds a hard link/]
  ] as Array<[string, Member[], RegExp]>)(
    'refuses an entry with %s, and leaves nothing behind',
    async (_what, members, why) => {
      const a = archive([ok, ...members.map(([n, k, d]): Member => [n, k, d?.replace('/OUTSIDE', outside)])])
      await expect(extractCacheArchive(a, workspace, SUBTREE)).rejects.toThrow(why)
      expect(listing(outside)).toEqual([])
      expect(listing(workspace)).toEqual(['flake.nix'])
    }
  )

  it('refuses a cache directory that is itself a link (it would move into place as one)', async () => {
    fs.writeFileSync(path.join(outside, 'x.narinfo'), 'StorePath: /nix/store/abc-x')
    await expect(
      extractCacheArchive(archive([[SUBTREE, 'symlink', outside]]), workspace, SUBTREE)
    ).rejects.toThrow(/is not a directory/)
    expect(listing(workspace)).toEqual(['flake.nix'])
    fs.rmSync(path.join(outside, 'x.narinfo'))
  })

  it('refuses an archive without the cache directory, or of another format', async () => {
    await expect(extractCacheArchive(archive([['other', 'file', 'x']]), workspace, SUBTREE)).rejects.toThrow(
      /unpacking the cache entry failed/
    )
    await expect(extractCacheArchive(path.join(dir, 'cache.zip'), workspace, SUBTREE)).rejects.toThrow(
      /unknown cache archive format/
    )
    expect(listing(workspace)).toEqual(['flake.nix'])
  })
})

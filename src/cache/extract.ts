import { promises as fs } from 'fs'
import * as path from 'path'
import { runCommand, tail } from '../run-command'

/**
 * Unpacks a store cache entry's archive (as @actions/cache made it) into `workspace`, taking only
 * `subtree` from it, and that only if it holds nothing but directories and regular files.
 *
 * @actions/cache's own extraction runs `tar -x -P` in the workspace: an entry someone else wrote
 * (anyone who can write to the repository's cache) could put any file the runner's user can write
 * — its nix.conf, the action's own code for the post step — before a single signature is checked.
 * Here tar runs without -P (it drops leading slashes and skips names with `..`) into a new empty
 * directory, so hard links and links can only point inside it and a link's target is made last,
 * never written through; then the subtree is checked and moved into place.
 */
export async function extractCacheArchive(
  archive: string,
  workspace: string,
  subtree: string
): Promise<void> {
  const decompress = archive.endsWith('.tzst')
    ? ['--use-compress-program', 'zstd -d --long=30']
    : archive.endsWith('.tgz')
      ? ['-z']
      : undefined
  if (!decompress) throw new Error(`unknown cache archive format: ${path.basename(archive)}`)
  const scratch = await fs.mkdtemp(path.join(workspace, '.nda-extract-'))
  try {
    const r = await runCommand('tar', [
      '-x',
      '-f',
      archive,
      ...decompress,
      '-C',
      scratch,
      '--no-same-owner',
      '--no-same-permissions',
      '--',
      subtree
    ])
    if (r.exitCode !== 0) throw new Error(`unpacking the cache entry failed: ${tail(r.stderr, 3)}`)
    // The subtree itself too: a link there would move into place as the cache directory.
    const top = await fs.lstat(path.join(scratch, subtree))
    if (!top.isDirectory())
      throw new Error(
        `the cache entry's ${subtree} is not a directory, which this action never saves: not restored`
      )
    const odd = await notPlain(path.join(scratch, subtree))
    if (odd) throw new Error(`the cache entry holds ${odd}, which this action never saves: not restored`)
    await fs.rm(path.join(workspace, subtree), { recursive: true, force: true })
    await fs.rename(path.join(scratch, subtree), path.join(workspace, subtree))
  } finally {
    await fs.rm(scratch, { recursive: true, force: true })
  }
}

/** The first entry below `dir` that is not a directory or a regular file (with one link), if any. */
async function notPlain(dir: string): Promise<string | undefined> {
  for (const e of await fs.readdir(dir)) {
    const p = path.join(dir, e)
    const st = await fs.lstat(p)
    if (st.isDirectory()) {
      const inner = await notPlain(p)
      if (inner) return inner
    } else if (!st.isFile()) return `${st.isSymbolicLink() ? 'a symlink' : 'a special file'} (${e})`
    else if (st.nlink > 1) return `a hard link (${e})`
  }
  return undefined
}

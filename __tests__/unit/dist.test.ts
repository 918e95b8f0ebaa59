import { spawnSync } from 'child_process'
import * as fs from 'fs'
import * as path from 'path'

// dist/ is what users run: it must be exactly what src/ bundles to. If this fails, run
// `npm run bundle` and commit dist/.
const root = path.join(__dirname, '..', '..')
/** scripts/check-dist.js: bundles src/ into a temporary directory and compares it with dist/. */
const checkDist = () =>
  spawnSync('node', [path.join(root, 'scripts', 'check-dist.js')], { cwd: root, encoding: 'utf8' })

describe('dist/', () => {
  it('is the fresh bundle of src/', () => {
    // scripts/check-dist.js: the same bundling as npm run bundle, into a temporary directory, and
    // every file compared (releases run it too).
    const r = checkDist()
    if (r.status !== 0) throw new Error(r.stderr.trim() || `check-dist exited ${r.status}`)
  }, 120_000)

  it("is the same whether or not npm built ssh2's native addon (allowScripts lets it not)", () => {
    // Whichever state node_modules is in, check the other one: a build directory planted (an empty
    // addon stands in: bundling only sees that it is there) or the real one moved aside.
    const build = path.join(root, 'node_modules', 'ssh2', 'lib', 'protocol', 'crypto', 'build')
    const aside = `${build}.nda-test`
    // A run cut off in the middle left the real build aside: put it back first.
    if (fs.existsSync(aside) && !fs.existsSync(build)) fs.renameSync(aside, build)
    const built = fs.existsSync(build)
    if (built) fs.renameSync(build, aside)
    else {
      fs.mkdirSync(path.join(build, 'Release'), { recursive: true })
      fs.writeFileSync(path.join(build, 'Release', 'sshcrypto.node'), '')
    }
    try {
      const r = checkDist()
      expect([r.status, r.stderr.trim()]).toEqual([0, ''])
    } finally {
      if (built) fs.renameSync(aside, build)
      else fs.rmSync(build, { recursive: true, force: true })
    }
  }, 120_000)

  it('ships no native addons (they are tied to one Node ABI; ssh2 falls back to pure JS)', () => {
    const walk = (d: string): string[] =>
      fs
        .readdirSync(d, { withFileTypes: true })
        .flatMap(e => (e.isDirectory() ? walk(path.join(d, e.name)) : [path.join(d, e.name)]))
    expect(walk(path.join(root, 'dist')).filter(f => f.endsWith('.node') || f.endsWith('.exe'))).toEqual([])
  })

  it('carries @actions/cache apart (dist/cache/, required only when the cache is used), as src/cache/store-cache.ts loads it', () => {
    // A message of @actions/cache's own: its code is not in what every run parses.
    const marker = 'Cache Service Url not found'
    expect(fs.readFileSync(path.join(root, 'dist', 'index.js'), 'utf8')).not.toContain(marker)
    expect(fs.readFileSync(path.join(root, 'dist', 'cache', 'index.js'), 'utf8')).toContain(marker)
    const { cache, tar } = require(
      path.join(root, 'dist', 'cache', 'index.js')
    ) as typeof import('../../src/cache/actions-cache-bundle')
    expect(
      [cache.restoreCache, cache.saveCache, cache.isFeatureAvailable, tar.extractTar].map(f => typeof f)
    ).toEqual(Array(4).fill('function'))
  })

  it('is what action.yml runs, on node24, for main and post', () => {
    const yml = fs.readFileSync(path.join(root, 'action.yml'), 'utf8')
    expect(yml).toMatch(/^ {2}using: node24$/m)
    expect(yml).toMatch(/^ {2}main: dist\/index\.js$/m)
    expect(yml).toMatch(/^ {2}post: dist\/index\.js$/m)
  })
})

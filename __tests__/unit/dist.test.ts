import { execFileSync } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'

// dist/ is what users run: it must be exactly what src/ bundles to. If this fails, run
// `npm run bundle` and commit dist/.
const root = path.join(__dirname, '..', '..')

describe('dist/', () => {
  it('is the fresh bundle of src/', () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-dist-'))
    try {
      // The same bundling as npm run bundle (independent of ssh2's native addons being built).
      execFileSync('node', [path.join(root, 'scripts', 'bundle.js'), out], { cwd: root, stdio: 'pipe' })
      // Every file ncc emits (index.js, lazily loaded chunks, licenses.txt), and nothing else in dist/.
      const listing = (d: string): string[] =>
        fs
          .readdirSync(d, { recursive: true, withFileTypes: true })
          .filter(e => e.isFile() && !e.name.endsWith('.node') && e.name !== 'pagent.exe')
          .map(e => path.relative(d, path.join(e.parentPath, e.name)))
          .sort()
      expect(listing(path.join(root, 'dist'))).toEqual(listing(out))
      for (const f of listing(out)) {
        const fresh = fs.readFileSync(path.join(out, f), 'utf8')
        const committed = fs.readFileSync(path.join(root, 'dist', f), 'utf8')
        if (fresh !== committed)
          throw new Error(`dist/${f} is stale: run \`npm run bundle\` and commit dist/`)
      }
    } finally {
      fs.rmSync(out, { recursive: true, force: true })
    }
  }, 120_000)

  it('ships no native addons (they are tied to one Node ABI; ssh2 falls back to pure JS)', () => {
    const walk = (d: string): string[] =>
      fs
        .readdirSync(d, { withFileTypes: true })
        .flatMap(e => (e.isDirectory() ? walk(path.join(d, e.name)) : [path.join(d, e.name)]))
    expect(walk(path.join(root, 'dist')).filter(f => f.endsWith('.node') || f.endsWith('.exe'))).toEqual([])
  })

  it('is what action.yml runs, on node24, for main and post', () => {
    const yml = fs.readFileSync(path.join(root, 'action.yml'), 'utf8')
    expect(yml).toMatch(/^ {2}using: node24$/m)
    expect(yml).toMatch(/^ {2}main: dist\/index\.js$/m)
    expect(yml).toMatch(/^ {2}post: dist\/index\.js$/m)
  })
})

#!/usr/bin/env node
// Checks that dist/ is exactly what src/ bundles to (what users run must be what the sources say):
// bundles into a temporary directory the same way as `npm run bundle` and compares every file.
// Exit 0 when fresh; 1, naming the first stale file, when not. Used by the dist test and releases.
'use strict'
const { execFileSync } = require('child_process')
const fs = require('fs')
const os = require('os')
const path = require('path')

const root = path.join(__dirname, '..')
/** Every file ncc emits (index.js, lazily loaded chunks, licenses.txt), not native addons. */
const listing = d =>
  fs
    .readdirSync(d, { recursive: true, withFileTypes: true })
    .filter(e => e.isFile() && !e.name.endsWith('.node') && e.name !== 'pagent.exe')
    .map(e => path.relative(d, path.join(e.parentPath, e.name)))
    .sort()

const out = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-dist-'))
try {
  execFileSync('node', [path.join(root, 'scripts', 'bundle.js'), out], { cwd: root, stdio: 'pipe' })
  const committed = listing(path.join(root, 'dist'))
  const fresh = listing(out)
  const stale =
    JSON.stringify(committed) !== JSON.stringify(fresh)
      ? `dist/ has ${committed.join(', ')} but src/ bundles to ${fresh.join(', ')}`
      : fresh.find(
          f =>
            fs.readFileSync(path.join(out, f), 'utf8') !== fs.readFileSync(path.join(root, 'dist', f), 'utf8')
        )
  if (stale) {
    console.error(
      `dist/ is stale (${stale.includes(' ') ? stale : `dist/${stale}`}): run \`npm run bundle\` and commit dist/`
    )
    process.exitCode = 1
  }
} finally {
  fs.rmSync(out, { recursive: true, force: true })
}

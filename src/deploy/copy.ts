import { ChildProcessByStdio, spawn } from 'child_process'
import { readFileSync } from 'fs'
import { Readable, Transform, Writable } from 'stream'
import { ActionError } from '../errors'
import { PathInfo, totalNarSize } from '../nix/closure'
import { RunnerNix } from '../nix/nix'
import * as path from 'path'
import { formatBytes } from '../report/format'
import { Log, plainLog } from '../report/untrusted'
import { Remote } from '../ssh/connection'
import { shellCommand } from '../ssh/quote'
import { IMPORT_SCRIPT, QUERY_MISSING_SCRIPT, SUBSTITUTE_SCRIPT } from '../target/scripts'
import { childEnv } from '../secrets'
import { chooseCodec, Codec, CompressionSetting, onPath } from './compression'

export interface CopyResult {
  /** The compression used on the wire. */
  codec: Codec['name']
  /** Paths the Pi lacked and received, dependencies first. */
  copiedPaths: string[]
  /** Sum of the NAR sizes of the copied paths. */
  narBytes: number
  /** Bytes sent over the SSH channel (the export stream). */
  wireBytes: number
}

export const GC_ROOT_DIR = '/nix/var/nix/gcroots/nix-deploy-action'

export { IMPORT_SCRIPT, QUERY_MISSING_SCRIPT, SUBSTITUTE_SCRIPT }

/** How long the target may spend substituting before the action copies everything itself. */
const SUBSTITUTE_TIMEOUT_MS = 300_000

/**
 * Lets the target substitute what it can of `plan.toCopy`; returns the plan with only what is still
 * missing, and what the target fetched itself. Never fails the deploy: on any problem, everything
 * is copied as without it.
 */
export async function substituteOnTarget(
  host: Remote,
  plan: CopyPlan,
  log: Log = plainLog
): Promise<{ plan: CopyPlan; substituted: PathInfo[] }> {
  if (plan.toCopy.length === 0) return { plan, substituted: [] }
  const asked = new Set(plan.toCopy.map(p => p.path))
  try {
    const r = await host.exec(shellCommand(['sh', '-c', SUBSTITUTE_SCRIPT, 'sh']), {
      stdin: plan.toCopy.map(p => p.path).join('\n') + '\n',
      timeoutMs: SUBSTITUTE_TIMEOUT_MS,
      what: 'substituting on the target from its own substituters'
    })
    if (r.exitCode !== 0 && r.stdout.trim() === '')
      throw new Error(`exit ${r.exitCode}: ${r.stderr.trim().slice(-200)}`)
    const missing = parseMissing(r.stdout, asked)
    const substituted = plan.toCopy.filter(p => !missing.has(p.path))
    if (substituted.length > 0)
      log.info(
        `The target fetched ${substituted.length} of ${plan.toCopy.length} paths (${formatBytes(totalNarSize(substituted))}) from its own substituters`
      )
    else log.info("The target's substituters had none of the paths (or are unreachable): copying them all")
    return { plan: { ...plan, toCopy: plan.toCopy.filter(p => missing.has(p.path)) }, substituted }
  } catch (e) {
    log.info('Substituting on the target did not work (the target said what follows): copying every path')
    log.untrusted((e as Error).message)
    return { plan, substituted: [] }
  }
}

/**
 * Bytes a running process has read so far (Linux /proc/PID/io rchar); undefined where that is not
 * available.
 */
export function bytesReadBy(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined
  try {
    const m = /^rchar: ([0-9]+)$/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))
    return m ? Number(m[1]) : undefined
  } catch {
    return undefined
  }
}

/**
 * The import's time limit: generous (the stream at 100 KiB/s of NAR, plus 10 minutes), so only a
 * target that stopped importing reaches it; the connection's keepalive catches a dead link sooner.
 */
export function importTimeoutMs(narBytes: number): number {
  return 600_000 + Math.ceil(narBytes / (100 * 1024)) * 1000
}

/** Above this many paths, the post-import check is a separate call (the command line would get long). */
const MAX_PATHS_ON_COMMAND_LINE = 800

/**
 * The GC root one run places for the system it copies: named by the whole store path (hash and
 * name: two systems of one name must not share a root) and the run, so concurrent runs never
 * remove each other's. A run that dies before removing its root leaves it; the survey removes roots
 * older than GC_ROOT_MAX_AGE_MINUTES (no deploy takes that long).
 */
export function gcRootPath(storePath: string, runId: string): string {
  return `${GC_ROOT_DIR}/${path.posix.basename(storePath)}.${runId}`
}
export const GC_ROOT_MAX_AGE_MINUTES = 24 * 60

/** Parses the Pi's answer to QUERY_MISSING, keeping only paths we asked about. */
export function parseMissing(stdout: string, asked: Set<string>): Set<string> {
  return new Set(
    stdout
      .split('\n')
      .map(l => l.trim())
      .filter(l => l !== '' && asked.has(l))
  )
}

export async function queryMissing(host: Remote, paths: string[]): Promise<Set<string>> {
  const r = await host.exec(shellCommand(['sh', '-c', QUERY_MISSING_SCRIPT, 'sh']), {
    stdin: paths.join('\n') + '\n',
    timeoutMs: 120_000,
    what: 'checking the copied paths'
  })
  if (r.exitCode !== 0)
    throw new ActionError(
      `asking ${host.label} which store paths it lacks failed (exit ${r.exitCode}): ${r.stderr.trim().slice(-500)}`,
      'Check that Nix works on the target (nix-store --version) and that the user may read its store.',
      'copy'
    )
  return parseMissing(r.stdout, new Set(paths))
}

export interface CopyPlan {
  /** The closure's paths the target lacks, dependencies first. */
  toCopy: PathInfo[]
  /** Decompressors the target has. */
  targetCodecs: Set<string>
}

/**
 * Copies the paths the survey found missing (`plan.toCopy`): `nix-store --export` on the runner,
 * compressed, streamed over the SSH channel into `nix-store --import` on the Pi, dependencies
 * first. Nix registers each imported path only once it is complete, so a cut stream leaves no
 * partial path, and a re-run sends only what is still missing. The GC root the survey placed keeps
 * the Pi's garbage collector off the new system until the profile holds it.
 */
export async function copyClosure(
  host: Remote,
  nix: RunnerNix,
  plan: CopyPlan,
  closurePathCount: number,
  compression: CompressionSetting = 'auto',
  log: Log = plainLog
): Promise<CopyResult> {
  const { toCopy } = plan
  const narBytes = totalNarSize(toCopy)
  if (toCopy.length === 0) return { copiedPaths: [], narBytes: 0, wireBytes: 0, codec: 'none' }
  const chosen = chooseCodec(compression, tool => onPath(tool), plan.targetCodecs)
  if (chosen.note) log.info(chosen.note)
  const codec = chosen.codec
  log.info(
    `Copying ${toCopy.length} of ${closurePathCount} paths (${formatBytes(narBytes)}) to ${host.label}, compression: ${codec.name}`
  )
  const exportArgs = [...nix.legacyArgs(), '--export', ...toCopy.map(p => p.path)]
  let compressor: ChildProcessByStdio<Writable, Readable, Readable> | undefined
  let compressErr = ''
  let exporter: ChildProcessByStdio<null, Readable | null, Readable>
  let exportedBytes = 0
  let stream: Readable
  if (codec.compress.length > 0) {
    compressor = spawn(codec.compress[0], codec.compress.slice(1), {
      env: childEnv(),
      stdio: ['pipe', 'pipe', 'pipe']
    })
    compressor.stderr.on('data', (d: Buffer) => (compressErr += d.toString('utf8')))
    compressor.stdin.on('error', () => undefined)
    // nix-store writes straight into the compressor: the NAR bytes never pass through this
    // process, whose one thread encrypts everything the SSH transport sends.
    exporter = spawn('nix-store', exportArgs, {
      env: childEnv(),
      stdio: ['ignore', compressor.stdin, 'pipe']
    })
    compressor.stdin.destroy()
    stream = compressor.stdout
  } else {
    const counted = spawn('nix-store', exportArgs, { env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] })
    exporter = counted
    stream = counted.stdout.pipe(
      new Transform({
        transform(chunk: Buffer, _enc, cb) {
          exportedBytes += chunk.length
          cb(null, chunk)
        }
      })
    )
  }
  let exportErr = ''
  exporter.stderr.on('data', (d: Buffer) => (exportErr += d.toString('utf8')))
  const exportExit = new Promise<number>(resolve => exporter.on('close', code => resolve(code ?? -1)))
  const compressExit = compressor
    ? new Promise<number>(resolve => compressor!.on('close', code => resolve(code ?? -1)))
    : Promise.resolve(0)
  // How much of the export has left so far (for progress only): with a compressor, what it has
  // read (unknown where /proc is not there).
  const narSent = (): number | undefined => (compressor ? bytesReadBy(compressor.pid) : exportedBytes)

  let wireBytes = 0
  const started = Date.now()
  const countWire = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      wireBytes += chunk.length
      cb(null, chunk)
    }
  })
  // Progress every 10 s: enough to see it move, not a flood.
  const progress = setInterval(() => {
    const secs = (Date.now() - started) / 1000
    const read = narSent()
    if (read === undefined) {
      log.info(`  ${formatBytes(wireBytes)} on the wire (${formatBytes(wireBytes / secs)}/s)`)
      return
    }
    const sent = Math.min(read, narBytes)
    const rate = sent / secs
    const eta = rate > 0 ? Math.max(0, (narBytes - sent) / rate) : 0
    log.info(
      `  sent ${formatBytes(sent)} of ${formatBytes(narBytes)} (${formatBytes(wireBytes)} on the wire, ${formatBytes(rate)}/s, ~${Math.round(eta)} s left)`
    )
  }, 10_000)
  let imported
  try {
    const checkInline = toCopy.length <= MAX_PATHS_ON_COMMAND_LINE
    imported = await host.exec(
      shellCommand([
        'sh',
        '-c',
        IMPORT_SCRIPT,
        'sh',
        codec.name,
        ...(checkInline ? toCopy.map(p => p.path) : [])
      ]),
      {
        stdin: stream.pipe(countWire),
        timeoutMs: importTimeoutMs(narBytes),
        what: 'importing the copied paths (nix-store --import)'
      }
    )
  } catch (e) {
    exporter.kill()
    compressor?.kill()
    throw e
  } finally {
    clearInterval(progress)
  }
  if (imported.exitCode !== 0) {
    // The target stopped reading: stop the runner's side too, or it blocks on a full pipe forever.
    exporter.kill()
    compressor?.kill()
    throw new ActionError(
      `nix-store --import on ${host.label} failed (exit ${imported.exitCode}): ${imported.stderr.trim().slice(-800)}`,
      /No space left/i.test(imported.stderr)
        ? 'The target is out of disk space: free space on its /nix (nix-collect-garbage -d) and re-run.'
        : "Check the target's Nix and disk, then re-run: paths already imported are not sent again.",
      'copy'
    )
  }
  if ((await compressExit) !== 0)
    throw new ActionError(
      `${codec.name} on the runner failed: ${compressErr.trim().slice(-300)}`,
      'Set compression: none (or another codec) and re-run.',
      'copy'
    )
  if ((await exportExit) !== 0)
    throw new ActionError(
      `nix-store --export on the runner failed: ${exportErr.trim().slice(-500)}`,
      'The runner store may be damaged or the paths collected; re-run the job.',
      'copy'
    )
  const stillMissing =
    toCopy.length <= MAX_PATHS_ON_COMMAND_LINE
      ? parseMissing(imported.stdout, new Set(toCopy.map(p => p.path)))
      : await queryMissing(
          host,
          toCopy.map(p => p.path)
        )
  if (stillMissing.size > 0)
    throw new ActionError(
      `after the copy, ${host.label} still lacks ${stillMissing.size} path(s), e.g. ${[...stillMissing][0]}`,
      "Re-run the job; if it persists, check the target's Nix store (nix-store --verify).",
      'copy'
    )
  return { copiedPaths: toCopy.map(p => p.path), narBytes, wireBytes, codec: codec.name }
}

import { ChildProcessByStdio, spawn } from 'child_process'
import { readFileSync } from 'fs'
import { Readable, Transform, Writable } from 'stream'
import { ActionError, errorMessage } from '../errors'
import { parseNarFacts, PathInfo, totalNarSize } from '../nix/closure'
import { RunnerNix } from '../nix/nix'
import * as path from 'path'
import { formatBytes } from '../log/format'
import { Log } from '../log/untrusted'
import { BinaryCache, CopyPlan, ImportResult, Target } from '../target/target'
import { childEnv } from '../secrets'
import { chooseCodec, Codec, CompressionSetting, onPath } from './compression'
import { unsignedGateError } from './preflight'
import { SigningKey } from '../cache/signing'
import { runCommand } from '../run-command'
import { mkdtemp, rm, writeFile } from 'fs/promises'
import * as os from 'os'

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
/** How long the target may substitute from its own substituters (bounded: one attempt each). */
export const SUBSTITUTE_TIMEOUT_MS = 300_000

/**
 * Lets the target substitute what it can of `plan.toCopy`; returns the plan with only what is still
 * missing, and what the target fetched itself. Never fails the deploy: on any problem, everything
 * is copied as without it.
 */
export async function substituteOnTarget(
  target: Target,
  plan: CopyPlan,
  cache?: BinaryCache,
  toplevel?: string
): Promise<{ plan: CopyPlan; substituted: PathInfo[] }> {
  const log = target.log
  if (plan.toCopy.length === 0) return { plan, substituted: [] }
  if (cache && plan.cacheUnanswered) {
    log.info(
      `${target.label} is not asked to fetch from ${cache.uri}: it did not answer it during the survey`
    )
    cache = undefined
  }
  const from = cache ? `its own substituters and ${cache.uri}` : 'its own substituters'
  const paths = plan.toCopy.map(p => p.path)
  // A deploy plan's cache holds the whole closure: asked for the system, a target that listed the
  // closure from that cache fetches what it lacks of it (a path is valid only with its closure),
  // and no list of paths crosses the link. Only when the system is still missing after is it sent
  // the list, as without a plan: its own substituters (cache.nixos.org) may have what the plan's
  // cache did not give. A target that could not list it is sent the list at once (and, when the
  // cache did not answer it at all, without that cache).
  const byReference =
    cache !== undefined && plan.listedFromCache === true && toplevel !== undefined && paths.includes(toplevel)
  try {
    // From a deploy plan's cache the whole closure comes this way: as long as an import of it may take.
    const timeoutMs = cache
      ? Math.max(SUBSTITUTE_TIMEOUT_MS, importTimeoutMs(totalNarSize(plan.toCopy)))
      : SUBSTITUTE_TIMEOUT_MS
    let missing = await target.store.substitute(byReference ? [toplevel] : paths, cache, timeoutMs)
    // Asked for the system, it tried every path of the closure from the plan's cache already (a
    // cache that lists them and then stalls each download would cost as long again): the list goes
    // to its own substituters only.
    if (byReference && missing.size > 0) missing = await target.store.substitute(paths, undefined, timeoutMs)
    const substituted = plan.toCopy.filter(p => !missing.has(p.path))
    if (substituted.length > 0)
      log.info(
        `The target fetched ${substituted.length} of ${plan.toCopy.length} paths (${formatBytes(totalNarSize(substituted))}) from ${from}`
      )
    else
      log.info(
        `The target fetched none of the paths from ${from} (unreachable, or they lack them): copying them all`
      )
    return { plan: { ...plan, toCopy: plan.toCopy.filter(p => missing.has(p.path)) }, substituted }
  } catch (e) {
    log.info(
      'Substituting on the target did not work (the target said what follows): copying what it still lacks'
    )
    log.untrusted(errorMessage(e))
    // What it fetched before the failure stays fetched: only the rest is copied.
    const missing = await target.store.queryMissing(paths).catch(() => new Set(paths))
    return {
      plan: { ...plan, toCopy: plan.toCopy.filter(p => missing.has(p.path)) },
      substituted: plan.toCopy.filter(p => !missing.has(p.path))
    }
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

/**
 * Copies the paths the survey found missing (`plan.toCopy`): `nix-store --export` on the runner,
 * compressed, streamed over the SSH channel into `nix-store --import` on the Pi, dependencies
 * first. Nix registers each imported path only once it is complete, so a cut stream leaves no
 * partial path, and a re-run sends only what is still missing. The GC root the survey placed keeps
 * the Pi's garbage collector off the new system until the profile holds it.
 */
export async function copyClosure(
  target: Target,
  nix: RunnerNix,
  plan: CopyPlan,
  closurePathCount: number,
  compression: CompressionSetting = 'auto',
  signingKey?: SigningKey
): Promise<CopyResult> {
  const log = target.log
  const { toCopy } = plan
  const narBytes = totalNarSize(toCopy)
  if (toCopy.length === 0) return { copiedPaths: [], narBytes: 0, wireBytes: 0, codec: 'none' }
  if (target.store.importsSignedOnly) return copySigned(target, nix, toCopy, closurePathCount, signingKey)
  const chosen = chooseCodec(compression, tool => onPath(tool), plan.targetCodecs)
  if (chosen.note) log.info(chosen.note)
  const codec = chosen.codec
  log.info(
    `Copying ${toCopy.length} of ${closurePathCount} paths (${formatBytes(narBytes)}) to ${target.label}, compression: ${codec.name}`
  )
  const pipeline = startExport(nix, toCopy, codec)
  const wire = counted(pipeline.stream)
  const progress = reportProgress(log, narBytes, pipeline.narSent, wire.bytes)
  const checkInline = toCopy.length <= MAX_PATHS_ON_COMMAND_LINE
  const imported = await importing(progress, pipeline.kill, () =>
    target.store.importStream(
      codec.name,
      wire.stream,
      checkInline ? toCopy.map(p => p.path) : [],
      importTimeoutMs(narBytes)
    )
  )
  await checkPipeline(target, pipeline, imported, codec)
  assertNoneMissing(
    target.label,
    checkInline ? imported.stillMissing : await target.store.queryMissing(toCopy.map(p => p.path))
  )
  return { copiedPaths: toCopy.map(p => p.path), narBytes, wireBytes: wire.bytes(), codec: codec.name }
}

/** The runner's side of a copy: nix-store --export, into the compressor when there is one. */
interface ExportPipeline {
  stream: Readable
  /** How much of the export has left so far (for progress only; unknown where /proc is not there). */
  narSent: () => number | undefined
  exportExit: Promise<number>
  compressExit: Promise<number>
  exportErr: () => string
  compressErr: () => string
  kill(): void
}

function startExport(nix: RunnerNix, toCopy: PathInfo[], codec: Codec): ExportPipeline {
  const exportArgs = [...nix.legacyArgs(), '--export', ...toCopy.map(p => p.path)]
  let compressor: ChildProcessByStdio<Writable, Readable, Readable> | undefined
  let exporter: ChildProcessByStdio<null, Readable | null, Readable>
  let compressErr = ''
  let exportErr = ''
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
  exporter.stderr.on('data', (d: Buffer) => (exportErr += d.toString('utf8')))
  const c = compressor
  return {
    stream,
    narSent: () => (c ? bytesReadBy(c.pid) : exportedBytes),
    exportExit: new Promise<number>(resolve => exporter.on('close', code => resolve(code ?? -1))),
    compressExit: c
      ? new Promise<number>(resolve => c.on('close', code => resolve(code ?? -1)))
      : Promise.resolve(0),
    exportErr: () => exportErr,
    compressErr: () => compressErr,
    kill: () => {
      exporter.kill()
      c?.kill()
    }
  }
}

/** Progress every 10 s: enough to see it move, not a flood. */
function reportProgress(
  log: Log,
  narBytes: number,
  narSent: () => number | undefined,
  wireBytes: () => number
): NodeJS.Timeout {
  const started = Date.now()
  return setInterval(() => {
    const secs = (Date.now() - started) / 1000
    const read = narSent()
    if (read === undefined) {
      log.info(`  ${formatBytes(wireBytes())} on the wire (${formatBytes(wireBytes() / secs)}/s)`)
      return
    }
    const sent = Math.min(read, narBytes)
    const rate = sent / secs
    const eta = rate > 0 ? Math.max(0, (narBytes - sent) / rate) : 0
    log.info(
      `  sent ${formatBytes(sent)} of ${formatBytes(narBytes)} (${formatBytes(wireBytes())} on the wire, ${formatBytes(rate)}/s, ~${Math.round(eta)} s left)`
    )
  }, 10_000)
}

/** Fails with what went wrong on either side of the copy. */
async function checkPipeline(
  target: Target,
  p: ExportPipeline,
  imported: ImportResult,
  codec: Codec
): Promise<void> {
  if (imported.exitCode !== 0) {
    // The target stopped reading: stop the runner's side too, or it blocks on a full pipe forever.
    p.kill()
    throw new ActionError(
      `nix-store --import on ${target.label} failed (exit ${imported.exitCode}): ${imported.stderr.trim().slice(-800)}`,
      /No space left/i.test(imported.stderr)
        ? 'The target is out of disk space: free space on its /nix (nix-collect-garbage -d) and re-run.'
        : "Check the target's Nix and disk, then re-run: paths already imported are not sent again.",
      'copy'
    )
  }
  if ((await p.compressExit) !== 0)
    throw new ActionError(
      `${codec.name} on the runner failed: ${p.compressErr().trim().slice(-300)}`,
      'Set compression: none (or another codec) and re-run.',
      'copy'
    )
  if ((await p.exportExit) !== 0)
    throw new ActionError(
      `nix-store --export on the runner failed: ${p.exportErr().trim().slice(-500)}`,
      'The runner store may be damaged or the paths collected; re-run the job.',
      'copy'
    )
}

/**
 * The copy to a deploy user's gate (nixos/deploy-user.nix), which imports only signed paths as an
 * untrusted user of the target's Nix daemon: `nix copy --to file://DIR` on the runner writes the
 * missing paths as a binary cache, each narinfo signed with signing-key (read from a pipe) and
 * each NAR compressed with zstd; the directory goes over the channel as a tar, and the gate copies
 * from it (the daemon checks every signature). Not streamed as the NAR export is: the cache is
 * written first (on the runner's disk), then sent.
 */
async function copySigned(
  target: Target,
  nix: RunnerNix,
  toCopy: PathInfo[],
  closurePathCount: number,
  signingKey: SigningKey | undefined
): Promise<CopyResult> {
  if (!signingKey) throw unsignedGateError(target.label)
  const log = target.log
  const narBytes = totalNarSize(toCopy)
  log.info(
    `Copying ${toCopy.length} of ${closurePathCount} paths (${formatBytes(narBytes)}) to ${target.label} as a binary cache signed by ${signingKey.name}`
  )
  const dir = await mkdtemp(path.join(process.env.RUNNER_TEMP || os.tmpdir(), 'nda-signed-'))
  try {
    await writeSignedCache(nix, dir, toCopy, signingKey)
    const tar = spawn('tar', ['-c', '-C', dir, '.'], { env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] })
    let tarErr = ''
    tar.stderr.on('data', (d: Buffer) => (tarErr += d.toString('utf8')))
    const tarExit = new Promise<number>(resolve => tar.on('close', code => resolve(code ?? -1)))
    const wire = counted(tar.stdout)
    const progress = reportProgress(log, narBytes, () => undefined, wire.bytes)
    const imported = await importing(
      progress,
      () => tar.kill(),
      () =>
        target.store.importSignedCache(
          wire.stream,
          toCopy.map(p => p.path),
          importTimeoutMs(narBytes)
        )
    )
    if (imported.exitCode !== 0) {
      tar.kill()
      throw new ActionError(
        `importing on ${target.label} failed (exit ${imported.exitCode}): ${imported.stderr.trim().slice(-800)}`,
        /signature/i.test(imported.stderr)
          ? `The target's Nix daemon takes only paths signed by a key in its trusted-public-keys: set services.nix-deploy-action.deployUser.signingPublicKey on the target to signing-key's public half (${signingKey.publicKey}), deploy that as root once, then re-run.`
          : "Check the target's Nix and disk, then re-run: paths already imported are not sent again.",
        'copy'
      )
    }
    if ((await tarExit) !== 0)
      throw new ActionError(
        `tar on the runner failed: ${tarErr.trim().slice(-300)}`,
        'Re-run the job.',
        'copy'
      )
    // The gate answers for the paths the cache held; the whole list is checked here.
    assertNoneMissing(
      target.label,
      imported.stillMissing.size > 0
        ? imported.stillMissing
        : await target.store.queryMissing(toCopy.map(p => p.path))
    )
    return { copiedPaths: toCopy.map(p => p.path), narBytes, wireBytes: wire.bytes(), codec: 'zstd' }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

/**
 * `nix copy --to file://DIR`: the paths as a binary cache, each signed (the key on a pipe). A binary
 * cache takes a path only when it has the paths it references, and the target has those already:
 * each gets a narinfo of its own first (no NAR: nothing reads one), removed before the cache is sent.
 */
async function writeSignedCache(
  nix: RunnerNix,
  dir: string,
  toCopy: PathInfo[],
  key: SigningKey
): Promise<void> {
  const stubs = await writeReferenceStubs(nix, dir, toCopy)
  const store = `file://${dir}?compression=zstd&secret-key=/dev/fd/3`
  const w = await runCommand(
    'nix',
    [...nix.nixArgs(), 'copy', '--no-recursive', '--to', store, ...toCopy.map(p => p.path)],
    { secretFile: key.secret }
  )
  if (w.exitCode !== 0)
    throw new ActionError(
      `writing the signed binary cache on the runner failed: ${w.stderr.trim().slice(-500)}`,
      "Check the runner's disk space (RUNNER_TEMP) and its Nix store, then re-run.",
      'copy'
    )
  await Promise.all(stubs.map(f => rm(f, { force: true })))
}

/** A narinfo for each path the copied ones reference but do not include; returns their files. */
async function writeReferenceStubs(nix: RunnerNix, dir: string, toCopy: PathInfo[]): Promise<string[]> {
  const copied = new Set(toCopy.map(p => p.path))
  const outside = [...new Set(toCopy.flatMap(p => p.references))].filter(r => !copied.has(r))
  if (outside.length === 0) return []
  const r = await runCommand('nix', [...nix.nixArgs(), 'path-info', '--json', ...outside])
  if (r.exitCode !== 0)
    throw new ActionError(
      `reading the runner's store (nix path-info) failed: ${r.stderr.trim().slice(-300)}`,
      "Check the runner's Nix store, then re-run.",
      'copy'
    )
  const facts = parseNarFacts(r.stdout)
  return Promise.all(
    outside.map(async ref => {
      const hashPart = path.posix.basename(ref).slice(0, 32)
      const file = path.join(dir, `${hashPart}.narinfo`)
      const fields = [
        `StorePath: ${ref}`,
        `URL: nar/${hashPart}.nar`,
        'Compression: none',
        `NarHash: ${facts.get(ref)?.narHash}`,
        `NarSize: ${facts.get(ref)?.narSize || 1}`,
        'References: '
      ]
      await writeFile(file, fields.join('\n') + '\n')
      return file
    })
  )
}

/** A stream passed through, counting its bytes (what goes over the wire). */
function counted(stream: Readable): { stream: Readable; bytes: () => number } {
  let n = 0
  const out = stream.pipe(
    new Transform({
      transform(chunk: Buffer, _enc, cb) {
        n += chunk.length
        cb(null, chunk)
      }
    })
  )
  return { stream: out, bytes: () => n }
}

/** After an import: fails naming a path the target still lacks. */
function assertNoneMissing(label: string, stillMissing: Set<string>): void {
  if (stillMissing.size > 0)
    throw new ActionError(
      `after the copy, ${label} still lacks ${stillMissing.size} path(s), e.g. ${[...stillMissing][0]}`,
      "Re-run the job; if it persists, check the target's Nix store (nix-store --verify).",
      'copy'
    )
}

/** The import on the target, with the runner's side killed when it fails and the progress stopped. */
async function importing(
  progress: NodeJS.Timeout,
  killSender: () => void,
  run: () => Promise<ImportResult>
): Promise<ImportResult> {
  try {
    return await run()
  } catch (e) {
    killSender()
    throw e
  } finally {
    clearInterval(progress)
  }
}

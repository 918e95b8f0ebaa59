import * as core from '@actions/core'
import { promises as fs } from 'fs'
import * as os from 'os'
import * as path from 'path'
import { readPendingSave, saveStore } from './cache/store-cache'
import { formatBytes } from './log/format'
import { maskSecrets, STATE_CACHE, STATE_TEMP_DIR } from './main'
import { RunnerNix } from './nix/nix'
import { info, logWarning } from './log/untrusted'
import { parseSigningKey, SigningKey } from './cache/signing'
import { forgetSecretInputs } from './secrets'
import { parseNixOptions, SECRET_INPUTS } from './inputs'
import { errorMessage } from './errors'
import { PostReport, publishPostReport } from './report/publish'

/** Saves the store cache the main step prepared (it records nothing when nothing new was built). */
async function saveStoreCache(key: SigningKey | undefined, report: PostReport): Promise<void> {
  const raw = core.getState(STATE_CACHE)
  if (!raw) return
  const problems: string[] = []
  const s = readPendingSave(raw, parseNixOptions(core.getInput('nix-options'), problems))
  if (typeof s === 'string' || problems.length > 0) {
    logWarning(
      report.warnings,
      `Store cache not saved: what the main step left for it is not what it writes (${typeof s === 'string' ? s : problems.join('; ')}).`
    )
    return
  }
  const signingKey = s.signed ? key : undefined
  if (s.signed && !signingKey) {
    logWarning(
      report.warnings,
      'Store cache not saved: signing-key is not readable in the post step, and an entry under a signed key must be signed.'
    )
    return
  }
  core.startGroup('Save the Nix store cache')
  const r = await saveStore(new RunnerNix(s.settings), s.key, s.paths, signingKey).finally(() =>
    core.endGroup()
  )
  const line = r.saved
    ? `Store cache saved as ${s.key}: ${r.paths} paths, ${formatBytes(r.bytes ?? 0)}, in ${(r.ms / 1000).toFixed(1)} s`
    : `Store cache not saved: ${r.reason}`
  if (r.saved) info(line)
  else logWarning(report.warnings, line)
  report.summary.push(line)
}

/** signing-key as the main step read it (state is a file on the runner: it never holds the key). */
function postSigningKey(): SigningKey | undefined {
  const text = core.getInput('signing-key')
  const key = text ? parseSigningKey(text) : undefined
  return typeof key === 'string' ? undefined : key
}

/**
 * The post step: runs after the job's steps, also when the main step failed or was cancelled.
 * Removes the run's private directory under RUNNER_TEMP (the runner-side GC root of the built system
 * and anything else the main step wrote there). The SSH keys are never written to disk: ssh2 takes
 * them from memory.
 */
export async function post(): Promise<void> {
  const report: PostReport = { warnings: [], summary: [] }
  try {
    // Every secret input is in this process's environment again (a new step): masked as the main
    // step masks them, read where needed, then no child (tar, zstd, nix) inherits them.
    maskSecrets(name => core.getInput(name))
    const signingKey = postSigningKey()
    forgetSecretInputs(SECRET_INPUTS)
    await saveStoreCache(signingKey, report)
    await removeTempDir(report)
  } catch (e) {
    logWarning(report.warnings, `post step: ${errorMessage(e)}`)
  } finally {
    await publishPostReport(report)
  }
}

/** The run's directory under RUNNER_TEMP, if the main step made one. */
async function removeTempDir(report: PostReport): Promise<void> {
  const dir = core.getState(STATE_TEMP_DIR)
  if (!dir) return
  // Only ever delete what the main step made: a nix-deploy-action-* directory under the temp base.
  const base = path.resolve(process.env.RUNNER_TEMP || os.tmpdir())
  const resolved = path.resolve(dir)
  if (path.dirname(resolved) !== base || !path.basename(resolved).startsWith('nix-deploy-action-')) {
    logWarning(report.warnings, `post: not removing ${dir}: it is not a directory this action created`)
    return
  }
  await fs.rm(resolved, { recursive: true, force: true })
  info(`Removed ${resolved}`)
}

import * as core from '@actions/core'
import { promises as fs } from 'fs'
import * as os from 'os'
import * as path from 'path'
import { STATE_TEMP_DIR } from './main'

/**
 * The post step: runs after the job's steps, also when the main step failed or was cancelled.
 * Removes the run's private directory under RUNNER_TEMP (the runner-side GC root of the built system
 * and anything else the main step wrote there). The SSH keys are never written to disk: ssh2 takes
 * them from memory.
 */
export async function post(): Promise<void> {
  const dir = core.getState(STATE_TEMP_DIR)
  if (!dir) return
  // Only ever delete what the main step made: a nix-deploy-action-* directory under the temp base.
  const base = path.resolve(process.env.RUNNER_TEMP || os.tmpdir())
  const resolved = path.resolve(dir)
  if (path.dirname(resolved) !== base || !path.basename(resolved).startsWith('nix-deploy-action-')) {
    core.warning(`post: not removing ${dir}: it is not a directory this action created`)
    return
  }
  await fs.rm(resolved, { recursive: true, force: true })
  core.info(`Removed ${resolved}`)
}

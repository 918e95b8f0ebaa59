/**
 * NixOps' `deployment.keys`: secrets that must not enter the Nix store (it is world-readable), so
 * they go straight to a file on the target -- by default under /run/keys, which is a tmpfs and so
 * gone after a reboot, as with NixOps; every deploy uploads them again. How they are written, and
 * which directories are refused: src/target/scripts/upload-key.sh.
 */
import { execFile } from 'child_process'
import { promises as fs } from 'fs'
import { ActionError, errorMessage } from '../errors'
import { DeploymentKey, keyProblems } from '../nix/legacy'
import { childEnv, maskSecret } from '../secrets'
import { Target } from '../target/target'

/** A deployment key with its content, read on the runner (kept in memory only). */
export interface LoadedKey extends DeploymentKey {
  content: string
}

/** The key's content, from text, keyFile (on the runner) or keyCommand (run on the runner, no shell). */
export async function keyContent(k: DeploymentKey): Promise<string> {
  if (k.text !== undefined) return k.text
  if (k.keyFile !== undefined) return fs.readFile(k.keyFile, 'utf8')
  const [cmd, ...args] = k.keyCommand ?? []
  return new Promise((resolve, reject) =>
    execFile(cmd, args, { maxBuffer: 1 << 20, env: childEnv() }, (err, stdout) =>
      err ? reject(new Error(`keyCommand ${cmd} failed: ${err.message}`)) : resolve(stdout)
    )
  )
}

/** Checks every key before anything is copied: a bad key fails the deploy with the target untouched. */
function checkKeys(machine: string, keys: DeploymentKey[]): void {
  const problems = keys.flatMap(k => keyProblems(machine, k))
  if (problems.length > 0)
    throw new ActionError(
      `deployment.keys cannot be uploaded: ${problems.join('; ')}`,
      'Fix these deployment.keys entries in the network file.',
      'inputs'
    )
}

/**
 * Reads every key of a machine and masks its content, before anything untrusted is printed (see
 * printUntrusted): a mask registered later could land inside another machine's untrusted output.
 */
export async function loadKeys(machine: string, keys: DeploymentKey[]): Promise<LoadedKey[]> {
  checkKeys(machine, keys)
  const loaded: LoadedKey[] = []
  for (const k of keys) {
    let content: string
    try {
      content = await keyContent(k)
    } catch (e) {
      throw new ActionError(
        `${machine}: reading deployment.keys.${k.name} failed: ${errorMessage(e)}`,
        'keyFile is read and keyCommand is run on the runner: make the file or command available to the job.',
        'inputs'
      )
    }
    maskSecret(content)
    loaded.push({ ...k, content })
  }
  return loaded
}

/** Uploads the keys (already read and masked by loadKeys). */
export async function uploadKeys(target: Target, keys: LoadedKey[]): Promise<void> {
  for (const k of keys) {
    await target.uploadKey(k)
    target.log.info(
      `Uploaded key ${k.name} to ${k.destDir}/${k.name} (${k.user}:${k.group}, ${k.permissions})`
    )
  }
}

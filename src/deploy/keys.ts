import * as core from '@actions/core'
import { execFile } from 'child_process'
import { promises as fs } from 'fs'
import { ActionError, errorMessage } from '../errors'
import { DeploymentKey, keyProblems } from '../nix/legacy'
import { maskSecret } from '../secrets'
import { shellCommand } from '../ssh/quote'
import { TargetSession } from './session'

/**
 * NixOps' `deployment.keys`: secrets that must not enter the Nix store (it is world-readable), so
 * they go straight to a file on the target -- by default under /run/keys, which is a tmpfs and so
 * gone after a reboot, as with NixOps; every deploy uploads them again. Written to a temporary file
 * with the final owner and mode, then renamed: a service never reads half a key. Arguments are
 * positional, the content comes on stdin: nothing of a key reaches a command line.
 */
export const UPLOAD_KEY_SCRIPT = String.raw`set -eu
dir=$1 name=$2 owner=$3 group=$4 mode=$5
if [ ! -d "$dir" ]; then mkdir -p "$dir"; chmod 0750 "$dir"; fi
tmp="$dir/.$name.nix-deploy-action.$$"
trap 'rm -f "$tmp"' EXIT
umask 077
cat > "$tmp"
chown "$owner:$group" "$tmp"
chmod "$mode" "$tmp"
mv -f "$tmp" "$dir/$name"
trap - EXIT`

/** The key's content, from text, keyFile (on the runner) or keyCommand (run on the runner, no shell). */
export async function keyContent(k: DeploymentKey): Promise<string> {
  if (k.text !== undefined) return k.text
  if (k.keyFile !== undefined) return fs.readFile(k.keyFile, 'utf8')
  const [cmd, ...args] = k.keyCommand ?? []
  return new Promise((resolve, reject) =>
    execFile(cmd, args, { maxBuffer: 1 << 20 }, (err, stdout) =>
      err ? reject(new Error(`keyCommand ${cmd} failed: ${err.message}`)) : resolve(stdout)
    )
  )
}

/** Checks every key before anything is copied: a bad key fails the deploy with the target untouched. */
export function checkKeys(machine: string, keys: DeploymentKey[]): void {
  const problems = keys.flatMap(k => keyProblems(machine, k))
  if (problems.length > 0)
    throw new ActionError(
      `deployment.keys cannot be uploaded: ${problems.join('; ')}`,
      'Fix these deployment.keys entries in the network file.',
      'inputs'
    )
}

/** Uploads the keys; the content is masked in the log before it is read. */
export async function uploadKeys(
  session: TargetSession,
  machine: string,
  keys: DeploymentKey[]
): Promise<void> {
  for (const k of keys) {
    let content: string
    try {
      content = await keyContent(k)
    } catch (e) {
      throw new ActionError(
        `${machine}: reading deployment.keys.${k.name} failed: ${errorMessage(e)}`,
        'keyFile is read and keyCommand is run on the runner: make the file or command available to the job.',
        'activate'
      )
    }
    maskSecret(content)
    const r = await session.exec(
      shellCommand(['sh', '-c', UPLOAD_KEY_SCRIPT, 'sh', k.destDir, k.name, k.user, k.group, k.permissions]),
      { stdin: content, timeoutMs: 60_000 }
    )
    if (r.exitCode !== 0)
      throw new ActionError(
        `uploading deployment.keys.${k.name} to ${session.label}:${k.destDir} failed: ${r.stderr.trim().slice(-300)}`,
        `Check that ${k.user}:${k.group} exist on the target and that ${k.destDir} is writable by root. The new system was not activated.`,
        'activate'
      )
    core.info(`Uploaded key ${k.name} to ${k.destDir}/${k.name} (${k.user}:${k.group}, ${k.permissions})`)
  }
}

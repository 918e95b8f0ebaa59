import { existsSync, promises as fs } from 'fs'
import * as path from 'path'
import { ActionError } from '../errors'
import { info } from '../log/untrusted'
import { runCommand } from '../run-command'
import {
  BinfmtEntry,
  findRegistration,
  parseBinfmtEntry,
  qemuArch,
  registrationLine,
  runnerSystem,
  runsNatively
} from './binfmt'

/** The `binfmt` input: register QEMU for a foreign platform when needed (auto), always, or never. */
export type BinfmtSetting = 'auto' | 'true' | 'false'

const BINFMT_DIR = '/proc/sys/fs/binfmt_misc'

export interface BinfmtOutcome {
  /** How the runner builds for the target: natively, through an existing or a new registration, or not itself. */
  how: 'native' | 'registered' | 'newly-registered' | 'not-available'
  detail: string
  /** Nix settings the build needs (extra-platforms for an emulated system). */
  nixSettings: Array<[string, string]>
}

async function readEntries(): Promise<BinfmtEntry[]> {
  let names: string[]
  try {
    names = await fs.readdir(BINFMT_DIR)
  } catch {
    return []
  }
  const entries: BinfmtEntry[] = []
  for (const name of names) {
    if (name === 'register' || name === 'status') continue
    try {
      entries.push(parseBinfmtEntry(name, await fs.readFile(path.join(BINFMT_DIR, name), 'utf8')))
    } catch {
      // unreadable entries are not ours to judge
    }
  }
  return entries
}

/** Runs a command as root: directly when we are root, else through `sudo -n` (never prompts). */
async function asRoot(cmd: string, args: string[], input?: string): Promise<{ ok: boolean; err: string }> {
  const root = process.getuid?.() === 0
  const r = root
    ? await runCommand(cmd, args, { input })
    : await runCommand('sudo', ['-n', cmd, ...args], { input })
  return { ok: r.exitCode === 0, err: r.stderr.trim() }
}

function findInterpreter(arch: string): string | undefined {
  const candidates = [
    `/usr/libexec/qemu-binfmt/${arch}-binfmt-P`,
    ...(process.env.PATH ?? '').split(':').map(d => path.join(d, `qemu-${arch}-static`)),
    `/usr/bin/qemu-${arch}-static`
  ]
  return candidates.find(c => c && existsSync(c))
}

/**
 * The qemu-user-static interpreter for `arch`, installed with apt-get when it is missing and the
 * runner has apt-get; an error saying how to get one when there is none.
 */
async function qemuInterpreter(system: string, arch: string, runner: string): Promise<string> {
  let interpreter = findInterpreter(arch)
  if (!interpreter && existsSync('/usr/bin/apt-get')) {
    info(`Installing qemu-user-static for ${system} emulation`)
    await asRoot('apt-get', ['install', '-y', '-q', 'qemu-user-static'])
    interpreter = findInterpreter(arch)
  }
  if (!interpreter)
    throw new ActionError(
      `the runner (${runner}) cannot build ${system}: no binfmt registration and no qemu-${arch}-static`,
      'Install qemu-user-static on the runner (apt-get install qemu-user-static binfmt-support), or on NixOS set boot.binfmt.emulatedSystems = [ "' +
        system +
        '" ], or use a runner of that platform.',
      'build'
    )
  return interpreter
}

/** Registers QEMU for `system` (which has no registration yet) and returns the new registration. */
async function registerQemu(system: string, runner: string, warn: (w: string) => void): Promise<BinfmtEntry> {
  const arch = qemuArch(system)
  if (!arch)
    throw new ActionError(
      `the runner (${runner}) cannot build ${system}, and QEMU emulation for it is not supported by this action`,
      `Run the job on a ${system} runner or give Nix a remote builder for ${system} (nix-options: builders = …).`,
      'build'
    )
  const interpreter = await qemuInterpreter(system, arch, runner)
  if (!existsSync(path.join(BINFMT_DIR, 'register'))) {
    const m = await asRoot('mount', ['-t', 'binfmt_misc', 'binfmt_misc', BINFMT_DIR])
    if (!m.ok) warn(`mounting ${BINFMT_DIR} failed: ${m.err}`)
  }
  // Prefer the distribution's own mechanism, which knows its interpreter and flags.
  let registered =
    existsSync('/usr/sbin/update-binfmts') &&
    (await asRoot('update-binfmts', ['--enable', `qemu-${arch}`])).ok
  if (!registered || !findRegistration(await readEntries(), system)) {
    const r = await asRoot('tee', [path.join(BINFMT_DIR, 'register')], registrationLine(system, interpreter))
    registered = r.ok
  }
  const now = findRegistration(await readEntries(), system)
  if (!registered || !now)
    throw new ActionError(
      `registering QEMU binfmt for ${system} failed`,
      'Registering needs root: run the action as root, allow passwordless sudo, or register it on the runner beforehand (update-binfmts --enable qemu-' +
        arch +
        ').',
      'build'
    )
  return now
}

/**
 * Makes sure the runner can build `system` binaries: nothing to do when native; an existing binfmt
 * registration (with or without the F flag) counts; otherwise, with binfmt auto/true, registers
 * qemu-user-static (installing it with apt-get when missing and allowed). binfmt: false leaves the
 * runner alone (Nix may still have remote builders, configured through nix-options).
 */
export async function ensureBinfmt(
  system: string,
  setting: BinfmtSetting,
  warn: (warning: string) => void
): Promise<BinfmtOutcome> {
  const runner = runnerSystem()
  if (runsNatively(runner, system))
    return { how: 'native', detail: `${runner} runner builds ${system} natively`, nixSettings: [] }
  const extra: Array<[string, string]> = [['extra-platforms', system]]
  const existing = findRegistration(await readEntries(), system)
  if (existing)
    return {
      how: 'registered',
      detail: `QEMU binfmt for ${system} already registered (${existing.name}, flags ${existing.flags || 'none'})`,
      nixSettings: extra
    }
  if (setting === 'false')
    return {
      how: 'not-available',
      detail: `no binfmt registration for ${system} and binfmt: false; Nix must have a builder for it`,
      nixSettings: []
    }

  const now = await registerQemu(system, runner, warn)
  return {
    how: 'newly-registered',
    detail: `registered QEMU binfmt for ${system} (${now.name}, flags ${now.flags || 'none'})`,
    nixSettings: extra
  }
}

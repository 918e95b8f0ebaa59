import { promises as fs } from 'fs'
import * as path from 'path'

/**
 * What a NixOS system boots with, as NixOS itself decides whether a switch needs a reboot: the
 * kernel, initrd and kernel modules its toplevel links to, and its kernel parameters. Systems
 * without a kernel (containers, this project's simplest fixtures) have none of them.
 */
export interface BootIdentity {
  kernel?: string
  initrd?: string
  kernelModules?: string
  kernelParams?: string
}

/** The toplevel's entries that make up its BootIdentity (kernel-params is a file, the rest links). */
const BOOT_ENTRIES = {
  kernel: 'kernel',
  initrd: 'initrd',
  kernelModules: 'kernel-modules',
  kernelParams: 'kernel-params'
} as const

/** Kernel parameters compare as words: a trailing newline or a doubled space changes nothing. */
export function normaliseParams(text: string | undefined): string | undefined {
  if (text === undefined) return undefined
  return text.trim().split(/\s+/).filter(Boolean).join(' ')
}

/**
 * Whether booting `next` needs a reboot from a machine that booted `booted`: true when any of
 * kernel, initrd, kernel modules or kernel parameters differ; undefined when either side is not
 * known (no /run/booted-system on the target, a build with nothing to compare against).
 */
export function needsReboot(
  booted: BootIdentity | undefined,
  next: BootIdentity | undefined
): boolean | undefined {
  if (!booted || !next) return undefined
  const comparable = (b: BootIdentity): string[] => [
    b.kernel ?? '',
    b.initrd ?? '',
    b.kernelModules ?? '',
    normaliseParams(b.kernelParams) ?? ''
  ]
  const [was, will] = [comparable(booted), comparable(next)]
  return was.some((v, i) => v !== will[i])
}

/** A toplevel in the runner's own store, read as files (no Nix call). */
export async function readBootIdentity(toplevel: string): Promise<BootIdentity> {
  const link = async (name: string): Promise<string | undefined> =>
    fs.realpath(path.join(toplevel, name)).catch(() => undefined)
  const params = await fs
    .readFile(path.join(toplevel, BOOT_ENTRIES.kernelParams), 'utf8')
    .catch(() => undefined)
  return {
    kernel: await link(BOOT_ENTRIES.kernel),
    initrd: await link(BOOT_ENTRIES.initrd),
    kernelModules: await link(BOOT_ENTRIES.kernelModules),
    kernelParams: normaliseParams(params)
  }
}

/**
 * A file a boot loader copies to /boot for a generation: its kernel or initrd, under the name the
 * NixOS boot loaders give it (the store path's name, then the file's: extlinux's
 * `nixos/<hash>-linux-6.6-Image`, systemd-boot's `EFI/nixos/<hash>-linux-6.6-bzImage.efi`).
 */
export interface BootFile {
  name: string
  bytes: number
}

/** The kernel and initrd of a built system as boot files, with their sizes on the runner. */
export async function readBootFiles(identity: BootIdentity): Promise<BootFile[]> {
  const files: BootFile[] = []
  for (const file of [identity.kernel, identity.initrd]) {
    if (!file) continue
    const stat = await fs.stat(file).catch(() => undefined)
    if (stat) files.push({ name: bootFileName(file), bytes: stat.size })
  }
  return files
}

/** `/nix/store/<hash>-linux-6.6/Image` → `<hash>-linux-6.6-Image`. */
export function bootFileName(storeFile: string): string {
  return `${path.basename(path.dirname(storeFile))}-${path.basename(storeFile)}`
}

/**
 * What installing this generation adds to /boot: its files the target's /boot does not have yet
 * (matched by the store name a boot loader's copy starts with: `…-Image` and `…-Image.efi` alike).
 */
export function bootBytesToAdd(files: BootFile[], present: string[]): number {
  return files
    .filter(f => !present.some(p => p === f.name || p.startsWith(`${f.name}.`)))
    .reduce((sum, f) => sum + f.bytes, 0)
}

/** The unit of the boot trial module this project ships for targets (nixos/boot-trial.nix). */
const BOOT_TRIAL_UNIT = 'etc/systemd/system/nix-deploy-boot-trial.service'

/**
 * The boot trial's protocol in a toplevel in the runner's store (nixos/boot-trial.nix), or
 * undefined without it: only with it can a reboot be a trial that goes back to the previous system
 * unless confirmed. Protocol 2 (its unit says X-NixDeployAction-Protocol=2) waits for the deploy's
 * login and then for its confirmation; 1 (a module from before) only for the confirmation.
 */
export async function bootTrialProtocol(toplevel: string): Promise<number | undefined> {
  const unit = await fs.readFile(path.join(toplevel, BOOT_TRIAL_UNIT), 'utf8').catch(() => undefined)
  return unit === undefined ? undefined : trialProtocolOf(unit)
}

/** The protocol a boot trial unit declares (1 when it declares none). */
export function trialProtocolOf(unit: string): number {
  const m = /^X-NixDeployAction-Protocol=([0-9]+)\s*$/m.exec(unit)
  return m ? Number(m[1]) : 1
}

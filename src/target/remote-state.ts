import { BootIdentity, normaliseParams } from '../nix/boot'
import { isStorePath } from '../nix/store-path'
import { parsePlanRecord, PlanRecord } from './plan-record'

/** What the Pi runs and has, read in one round trip before and after a deploy. */
export interface RemoteState {
  /** /run/current-system resolved: what runs now. */
  current?: string
  /** /nix/var/nix/profiles/system resolved: what boots next. */
  profile?: string
  /** The profile's generation link name, e.g. `system-12-link`. */
  profileLink?: string
  /** /run/current-system/system: the platform of the running system. */
  platform?: string
  uid?: number
  hasNixStore: boolean
  /** Free space on the filesystem of /nix/store, in bytes. */
  nixFreeBytes?: number
  /** /proc/sys/kernel/random/boot_id: another one after every boot. */
  bootId?: string
  /** Free space on /boot's filesystem, in bytes; undefined without /boot. */
  bootFreeBytes?: number
  /** The names of the files under /boot (three levels deep): boot loaders' kernels and initrds. */
  bootFiles: string[]
  /** /run/booted-system and what it booted with; undefined when the target has no such link. */
  booted?: BootIdentity & { system: string }
  /** A boot trial still pending there (nixos/boot-trial.sh), before the deploy's login or after it. */
  trial?: PendingTrial
  /**
   * The boot loader's one-shot file, when the running system has one set up
   * (/etc/nix-deploy-action/boot-once, from services.nix-deploy-action.bootTrial.bootOnce): a
   * reboot on trial boots the new system once (nixos/boot-once.sh).
   */
  bootOnce?: string
  /** The last deploy plan's record there (a shard job's, src/target/plan-record.ts). */
  planRecord?: PlanRecord
}

export interface PendingTrial {
  stage: 'pending' | 'reached'
  system: string
  previous: string
  previousGeneration?: number
  confirmSeconds: number
  loginSeconds?: number
}

export function parseRemoteState(text: string): RemoteState {
  const kv = new Map<string, string>()
  for (const line of text.split('\n')) {
    const i = line.indexOf('=')
    if (i > 0) kv.set(line.slice(0, i), line.slice(i + 1).trim())
  }
  const storePath = (k: string): string | undefined => {
    const v = kv.get(k)
    return v && isStorePath(v) ? v : undefined
  }
  const kb = (k: string): number | undefined => {
    const v = kv.get(k)
    return v && /^[0-9]+$/.test(v) ? Number(v) * 1024 : undefined
  }
  const link = kv.get('profile-link')
  const uid = kv.get('uid')
  return {
    current: storePath('current'),
    profile: storePath('profile'),
    profileLink: link && /^system-[0-9]+-link$/.test(link) ? link : undefined,
    platform: kv.get('platform') || undefined,
    uid: uid && /^[0-9]+$/.test(uid) ? Number(uid) : undefined,
    hasNixStore: (kv.get('nix-store') ?? '') !== '',
    nixFreeBytes: kb('nix-free-kb'),
    bootId: /^[0-9a-f-]{36}$/.test(kv.get('boot-id') ?? '') ? kv.get('boot-id') : undefined,
    bootFreeBytes: kb('boot-free-kb'),
    bootFiles: (kv.get('boot-files') ?? '').split(' ').filter(Boolean),
    booted: bootedOf(kv, storePath),
    trial: trialOf(kv, storePath),
    bootOnce: kv.get('boot-once') || undefined,
    planRecord: parsePlanRecord(kv)
  }
}

function trialOf(
  kv: Map<string, string>,
  storePath: (k: string) => string | undefined
): PendingTrial | undefined {
  const stage = kv.get('trial')
  const system = storePath('trial-new')
  const previous = storePath('trial-previous')
  const seconds = (k: string): number | undefined => {
    const v = kv.get(k)
    return v && /^[0-9]+$/.test(v) ? Number(v) : undefined
  }
  const confirmSeconds = seconds('trial-confirm-seconds')
  if ((stage !== 'pending' && stage !== 'reached') || !system || !previous || confirmSeconds === undefined)
    return undefined
  return {
    stage,
    system,
    previous,
    previousGeneration: seconds('trial-previous-generation'),
    confirmSeconds,
    loginSeconds: seconds('trial-login-seconds')
  }
}

function bootedOf(
  kv: Map<string, string>,
  storePath: (k: string) => string | undefined
): RemoteState['booted'] {
  const system = storePath('booted')
  if (!system) return undefined
  // Links resolve to files inside store paths (…-linux-6.6/Image): store paths with a suffix.
  const file = (k: string): string | undefined => {
    const v = kv.get(k)
    return v && v.startsWith('/nix/store/') ? v : undefined
  }
  return {
    system,
    kernel: file('booted-kernel'),
    initrd: file('booted-initrd'),
    kernelModules: file('booted-kernel-modules'),
    kernelParams: normaliseParams(kv.get('booted-kernel-params'))
  }
}

/** The generation number in a profile link name (system-12-link -> 12). */
export function generationOf(link: string | undefined): number | undefined {
  const m = link ? /^system-([0-9]+)-link$/.exec(link) : null
  return m ? Number(m[1]) : undefined
}

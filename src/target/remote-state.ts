import { isStorePath } from '../nix/store-path'

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
  const link = kv.get('profile-link')
  const freeKb = kv.get('nix-free-kb')
  const uid = kv.get('uid')
  return {
    current: storePath('current'),
    profile: storePath('profile'),
    profileLink: link && /^system-[0-9]+-link$/.test(link) ? link : undefined,
    platform: kv.get('platform') || undefined,
    uid: uid && /^[0-9]+$/.test(uid) ? Number(uid) : undefined,
    hasNixStore: (kv.get('nix-store') ?? '') !== '',
    nixFreeBytes: freeKb && /^[0-9]+$/.test(freeKb) ? Number(freeKb) * 1024 : undefined
  }
}

/** The generation number in a profile link name (system-12-link -> 12). */
export function generationOf(link: string | undefined): number | undefined {
  const m = link ? /^system-([0-9]+)-link$/.exec(link) : null
  return m ? Number(m[1]) : undefined
}

/**
 * Pure helpers for deciding whether the runner can build for a platform: natively, through an
 * existing binfmt_misc registration (qemu-user-static's F-flag one, or a NixOS runner's
 * `boot.binfmt.emulatedSystems` one without F), or not at all. I/O lives in binfmt-setup.ts.
 */

/** ELF header magic (first 20 bytes) per Nix system, as qemu's and NixOS's binfmt entries use. */
const ELF_MAGIC: Record<string, string> = {
  'aarch64-linux': '7f454c460201010000000000000000000200b700',
  'armv7l-linux': '7f454c4601010100000000000000000002002800',
  'armv6l-linux': '7f454c4601010100000000000000000002002800',
  'riscv64-linux': '7f454c460201010000000000000000000200f300',
  'x86_64-linux': '7f454c4602010100000000000000000002003e00',
  'i686-linux': '7f454c4601010100000000000000000002000300'
}

/** The qemu-user name of a Nix system's CPU (qemu-<arch>-static). */
const QEMU_ARCH: Record<string, string> = {
  'aarch64-linux': 'aarch64',
  'armv7l-linux': 'arm',
  'armv6l-linux': 'arm',
  'riscv64-linux': 'riscv64',
  'x86_64-linux': 'x86_64',
  'i686-linux': 'i386'
}

export function qemuArch(system: string): string | undefined {
  return QEMU_ARCH[system]
}

/** The Nix system of the machine running the action (from Node's process.arch). */
export function runnerSystem(arch: string = process.arch, platform: string = process.platform): string {
  const cpu =
    (
      { x64: 'x86_64', arm64: 'aarch64', ia32: 'i686', arm: 'armv7l', riscv64: 'riscv64' } as Record<
        string,
        string
      >
    )[arch] ?? arch
  return `${cpu}-${platform}`
}

/** Whether a machine of system `runner` executes `target` binaries without emulation. */
export function runsNatively(runner: string, target: string): boolean {
  return runner === target || (runner === 'x86_64-linux' && target === 'i686-linux')
}

export interface BinfmtEntry {
  name: string
  enabled: boolean
  interpreter: string
  flags: string
  magic: string
}

/** Parses one /proc/sys/fs/binfmt_misc/<name> file. */
export function parseBinfmtEntry(name: string, content: string): BinfmtEntry {
  const field = (key: string): string => {
    const m = new RegExp(`^${key}:? (.*)$`, 'm').exec(content)
    return m ? m[1].trim() : ''
  }
  return {
    name,
    enabled: /^enabled$/m.test(content),
    interpreter: field('interpreter'),
    flags: field('flags'),
    magic: field('magic').toLowerCase()
  }
}

/** The enabled registration that runs `system` binaries, if any (with or without the F flag). */
export function findRegistration(entries: BinfmtEntry[], system: string): BinfmtEntry | undefined {
  const magic = ELF_MAGIC[system]
  if (!magic) return undefined
  return entries.find(e => e.enabled && e.magic === magic)
}

/** The line written to /proc/sys/fs/binfmt_misc/register for qemu with the F (fix binary) flag. */
export function registrationLine(system: string, interpreter: string): string {
  const magic = ELF_MAGIC[system]
  const arch = QEMU_ARCH[system]
  if (!magic || !arch) throw new Error(`no binfmt magic known for ${system}`)
  // qemu's mask: ignore the ELF OS/ABI byte's padding and the low bit of e_type (EXEC or DYN).
  const mask = 'ffffffffffffff00fffffffffffffffffeffffff'
  const hex = (h: string): string => h.replace(/../g, b => `\\x${b}`)
  return `:qemu-${arch}:M::${hex(magic)}:${hex(mask)}:${interpreter}:F`
}

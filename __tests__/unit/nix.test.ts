import { parsePathInfoJson, topoSort, totalNarSize } from '../../src/nix/closure'
import {
  findRegistration,
  parseBinfmtEntry,
  registrationLine,
  runnerSystem,
  runsNatively
} from '../../src/nix/binfmt'
import { failedDerivation, nixErrorSummary } from '../../src/nix/nix'
import { isStorePath, storePathName } from '../../src/nix/store-path'

const P = (name: string, c = 'a') => `/nix/store/${c.repeat(32)}-${name}`

describe('store paths', () => {
  it('accepts real store paths only', () => {
    expect(isStorePath(P('nixos-system-pi3-24.05'))).toBe(true)
    expect(isStorePath(P('x; rm -rf /'))).toBe(false)
    expect(isStorePath('/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x')).toBe(false) // e is not nix base32
    expect(isStorePath(P('.hidden'))).toBe(false)
    expect(storePathName(P('hello-2.12'))).toBe('hello-2.12')
  })
})

describe('nix path-info --json', () => {
  const infos = [
    { path: P('top', 'b'), narSize: 100, references: [P('lib', 'c'), P('top', 'b')] },
    { path: P('lib', 'c'), narSize: 50, references: [P('libc', 'd')] },
    { path: P('libc', 'd'), narSize: 10, references: [] }
  ]
  it('reads the array form (Nix < 2.19) and the object form (2.19+)', () => {
    const fromArray = parsePathInfoJson(JSON.stringify(infos))
    const asObject = Object.fromEntries(
      infos.map(i => [i.path, { narSize: i.narSize, references: i.references }])
    )
    expect(parsePathInfoJson(JSON.stringify(asObject))).toEqual(fromArray)
    expect(totalNarSize(fromArray)).toBe(160)
  })
  it('refuses anything that is not a store path', () => {
    expect(() =>
      parsePathInfoJson(JSON.stringify([{ path: '/etc/passwd', narSize: 1, references: [] }]))
    ).toThrow(/not a Nix store path/)
  })
  it('orders dependencies first (what nix-store --import needs), ignoring self-references', () => {
    const order = topoSort(parsePathInfoJson(JSON.stringify(infos))).map(i => i.path)
    expect(order).toEqual([P('libc', 'd'), P('lib', 'c'), P('top', 'b')])
  })
  it('is deterministic and complete on a wide graph', () => {
    const many = Array.from({ length: 50 }, (_, i) => ({
      path: P(`p${i}`, 'abcdfghijk'[i % 10]),
      narSize: 1,
      references: i > 0 ? [P(`p${i - 1}`, 'abcdfghijk'[(i - 1) % 10])] : []
    }))
    const order = topoSort([...many].reverse()).map(i => i.path)
    expect(order).toEqual(many.map(m => m.path))
  })
})

describe('binfmt', () => {
  const qemuAarch64 = `enabled
interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P
flags: PF
offset 0
magic 7f454c460201010000000000000000000200b700
mask ffffffffffffff00fffffffffffffffffeffffff
`
  // A NixOS runner with boot.binfmt.emulatedSystems: no F flag, interpreter in the sandbox paths.
  const nixosAarch64 = qemuAarch64
    .replace('flags: PF', 'flags: P')
    .replace(/interpreter .*/, 'interpreter /run/binfmt/aarch64-linux')

  it('finds an enabled registration for the platform, with or without the F flag', () => {
    expect(findRegistration([parseBinfmtEntry('qemu-aarch64', qemuAarch64)], 'aarch64-linux')?.flags).toBe(
      'PF'
    )
    expect(
      findRegistration([parseBinfmtEntry('aarch64-linux', nixosAarch64)], 'aarch64-linux')?.interpreter
    ).toBe('/run/binfmt/aarch64-linux')
    expect(
      findRegistration(
        [parseBinfmtEntry('qemu-aarch64', qemuAarch64.replace('enabled', 'disabled'))],
        'aarch64-linux'
      )
    ).toBeUndefined()
    expect(findRegistration([parseBinfmtEntry('qemu-aarch64', qemuAarch64)], 'riscv64-linux')).toBeUndefined()
  })
  it('knows what runs natively', () => {
    expect(runnerSystem('x64', 'linux')).toBe('x86_64-linux')
    expect(runnerSystem('arm64', 'linux')).toBe('aarch64-linux')
    expect(runsNatively('aarch64-linux', 'aarch64-linux')).toBe(true)
    expect(runsNatively('x86_64-linux', 'i686-linux')).toBe(true)
    expect(runsNatively('x86_64-linux', 'aarch64-linux')).toBe(false)
  })
  it('writes a register line with the F flag that round-trips to the same magic', () => {
    const line = registrationLine('aarch64-linux', '/usr/bin/qemu-aarch64-static')
    expect(line).toMatch(/^:qemu-aarch64:M::\\x7f\\x45\\x4c\\x46.*:\/usr\/bin\/qemu-aarch64-static:F$/)
    const magic = line.split(':')[4].replace(/\\x/g, '')
    expect(magic).toBe('7f454c460201010000000000000000000200b700')
  })
})

describe('Nix error messages', () => {
  it('finds the failing derivation in 2.8 and current wording', () => {
    expect(failedDerivation(`error: builder for '${P('x.drv')}' failed with exit code 1;`)).toBe(P('x.drv'))
    expect(
      failedDerivation(
        `error: Cannot build '${P('y.drv')}'.\n       Reason: builder failed with exit code 1.`
      )
    ).toBe(P('y.drv'))
    expect(failedDerivation('error: something else')).toBeUndefined()
  })
  it('summarises the first error line', () => {
    expect(
      nixErrorSummary('warning: x\nerror: fixture: this configuration does not evaluate\n(use --show-trace)')
    ).toBe('fixture: this configuration does not evaluate')
  })
})

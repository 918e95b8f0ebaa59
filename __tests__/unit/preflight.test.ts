import {
  BOOT_MARGIN_BYTES,
  checkBootSpace,
  checkGatedDeploy,
  checkSpace,
  checkTarget,
  SPACE_MARGIN_BYTES
} from '../../src/deploy/preflight'
import { bootBytesToAdd, bootFileName } from '../../src/nix/boot'
import { RemoteState } from '../../src/target/remote-state'
import { readDeployUserFacts } from '../../src/nix/deploy-user-facts'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'

describe('preflight', () => {
  const S = '/nix/store/' + 'a'.repeat(32) + '-nixos-system'
  const ok: RemoteState = {
    current: S,
    profile: S,
    bootFiles: [],
    platform: 'aarch64-linux',
    uid: 0,
    hasNixStore: true,
    nixFreeBytes: 1e9
  }
  it('accepts a NixOS target of the right platform', () => {
    expect(() => checkTarget(ok, 'pi', 'aarch64-linux')).not.toThrow()
  })
  it('refuses a platform mismatch, a non-NixOS target, a target without Nix', () => {
    expect(() => checkTarget(ok, 'pi', 'x86_64-linux')).toThrow(
      /configuration is for x86_64-linux but pi runs aarch64-linux/
    )
    expect(() =>
      checkTarget({ ...ok, current: undefined, platform: undefined }, 'pi', 'aarch64-linux')
    ).toThrow(/does not run a NixOS system/)
    expect(() => checkTarget({ ...ok, hasNixStore: false }, 'pi', 'aarch64-linux')).toThrow(/no nix-store/)
  })
  it('refuses a copy that does not fit with margin, accepts one that does', () => {
    const free = 100 * 1024 * 1024
    expect(() => checkSpace({ ...ok, nixFreeBytes: free }, 'pi', 30 * 1024 * 1024)).not.toThrow()
    expect(() => checkSpace({ ...ok, nixFreeBytes: free }, 'pi', free - SPACE_MARGIN_BYTES)).toThrow(
      /has 100.0 MiB free on \/nix but the copy needs about/
    )
    expect(() => checkSpace({ ...ok, nixFreeBytes: 0 }, 'pi', 0)).not.toThrow()
  })
  const MiB = 1024 * 1024
  const kernel = {
    name: bootFileName('/nix/store/' + 'k'.repeat(32) + '-linux-6.6.63/Image'),
    bytes: 20 * MiB
  }
  const initrd = {
    name: bootFileName('/nix/store/' + 'i'.repeat(32) + '-initrd-linux-6.6.63/initrd'),
    bytes: 8 * MiB
  }
  it('counts only the boot files /boot does not have yet, whatever the boot loader appends', () => {
    expect(kernel.name).toBe('k'.repeat(32) + '-linux-6.6.63-Image')
    expect(bootBytesToAdd([kernel, initrd], [])).toBe(28 * MiB)
    expect(bootBytesToAdd([kernel, initrd], [kernel.name])).toBe(8 * MiB)
    // systemd-boot's copies end in .efi: the same file.
    expect(bootBytesToAdd([kernel, initrd], [`${kernel.name}.efi`, `${initrd.name}.efi`])).toBe(0)
    expect(bootBytesToAdd([kernel], [`${kernel.name}x`])).toBe(20 * MiB)
  })
  it('refuses a generation whose kernel and initrd do not fit on /boot, naming sizes and the fix', () => {
    const boot = (free: number, files: string[] = []): RemoteState => ({
      ...ok,
      bootFreeBytes: free,
      bootFiles: files
    })
    expect(() =>
      checkBootSpace(boot(28 * MiB + 2.8 * MiB + BOOT_MARGIN_BYTES), 'pi', [kernel, initrd])
    ).not.toThrow()
    expect(() => checkBootSpace(boot(28 * MiB), 'pi', [kernel, initrd])).toThrow(
      /pi has 28.0 MiB free on \/boot but the new generation's kernel and initrd need about 30.8 MiB \(28.0 MiB plus margin\)/
    )
    const refused = ((): unknown => {
      try {
        checkBootSpace(boot(MiB), 'pi', [kernel, initrd])
      } catch (e) {
        return e
      }
      return undefined
    })()
    expect(refused).toMatchObject({ hint: expect.stringMatching(/configurationLimit/), phase: 'copy' })
    // Already there (a redeploy, or the kernel of an older generation): nothing to add.
    expect(() => checkBootSpace(boot(0, [kernel.name, initrd.name]), 'pi', [kernel, initrd])).not.toThrow()
    // No /boot, or no kernel (a container): nothing to check.
    expect(() => checkBootSpace({ ...ok, bootFiles: [] }, 'pi', [kernel, initrd])).not.toThrow()
    expect(() => checkBootSpace(boot(0), 'pi', [])).not.toThrow()
  })
})

describe("a deploy user's gate, before anything changes (checkGatedDeploy)", () => {
  const top = '/nix/store/' + 'b'.repeat(32) + '-nixos-system-pi'
  const facts = { enabled: true, healthChecks: ['systemctl is-active nginx'] }
  it('lets through a signed deploy of a system with the module, running only checks it lists', () => {
    expect(() => checkGatedDeploy('pi', top, facts, ['systemctl is-active nginx'], true)).not.toThrow()
    expect(() => checkGatedDeploy('pi', top, facts, [], true)).not.toThrow()
  })
  it('refuses a deploy nothing signs, a system without the module, a check it does not list', () => {
    expect(() => checkGatedDeploy('pi', top, facts, [], false)).toThrow(/signing-key is not set/)
    expect(() => checkGatedDeploy('pi', top, { enabled: false, healthChecks: [] }, [], true)).toThrow(
      /does not have services\.nix-deploy-action\.deployUser/
    )
    expect(() => checkGatedDeploy('pi', top, facts, ['id'], true)).toThrow(/does not list "id"/)
  })
  it('refuses a deploy plan that does not say (one of an earlier release), naming the fix', () => {
    expect(() => checkGatedDeploy('pi', top, undefined, [], true)).toThrow(
      /deploy-plan does not say whether its new system has services\.nix-deploy-action\.deployUser/
    )
  })
  it("reads the facts from the system's etc/nix-deploy-action", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-facts-'))
    try {
      expect(await readDeployUserFacts(dir)).toEqual({ enabled: false, healthChecks: [] })
      fs.mkdirSync(path.join(dir, 'etc', 'nix-deploy-action'), { recursive: true })
      fs.writeFileSync(path.join(dir, 'etc', 'nix-deploy-action', 'deploy-user'), 'protocol 2 scripts x\n')
      fs.writeFileSync(
        path.join(dir, 'etc', 'nix-deploy-action', 'health-checks'),
        'systemctl is-active nginx\ntest -e /run/x\n'
      )
      expect(await readDeployUserFacts(dir)).toEqual({
        enabled: true,
        healthChecks: ['systemctl is-active nginx', 'test -e /run/x']
      })
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })
})

import { checkSpace, checkTarget, SPACE_MARGIN_BYTES } from '../../src/deploy/preflight'
import { RemoteState } from '../../src/target/remote-state'

describe('preflight', () => {
  const S = '/nix/store/' + 'a'.repeat(32) + '-nixos-system'
  const ok: RemoteState = {
    current: S,
    profile: S,
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
})

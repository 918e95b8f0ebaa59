import { gcRootPath } from '../../src/deploy/copy'

describe('what a deploy leaves on the target is its own', () => {
  it('GC roots are per store path (hash included) and per run: no two deploys share one', () => {
    const a = '/nix/store/' + 'a'.repeat(32) + '-nixos-system-pi3-24.05'
    const b = '/nix/store/' + 'b'.repeat(32) + '-nixos-system-pi3-24.05'
    expect(gcRootPath(a, 'run1')).not.toBe(gcRootPath(b, 'run1'))
    expect(gcRootPath(a, 'run1')).not.toBe(gcRootPath(a, 'run2'))
    expect(gcRootPath(a, 'run1')).toBe(`/nix/var/nix/gcroots/nix-deploy-action/${a.slice(11)}.run1`)
  })
})

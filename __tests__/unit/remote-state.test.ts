import { generationOf, parseRemoteState } from '../../src/target/remote-state'
import { parseMissing } from '../../src/target/parse'
import { isOnceFile } from '../../src/target/ssh-target'

const TOP = '/nix/store/' + 'a'.repeat(32) + '-nixos-system-pi3-gen1'
const PREV = '/nix/store/' + 'b'.repeat(32) + '-nixos-system-pi3-gen0'

describe('remote state', () => {
  it('parses the probe output and ignores anything that is not a store path', () => {
    const s = parseRemoteState(
      `current=${TOP}\nprofile=${PREV}\nprofile-link=system-12-link\nplatform=aarch64-linux\nuid=0\nnix-store=/run/current-system/sw/bin/nix-store\n`
    )
    expect(s).toEqual({
      current: TOP,
      profile: PREV,
      profileLink: 'system-12-link',
      platform: 'aarch64-linux',
      uid: 0,
      hasNixStore: true,
      bootFiles: []
    })
    expect(parseRemoteState('current=/etc\nprofile-link=../../etc\nuid=x\nnix-store=\n')).toEqual({
      current: undefined,
      profile: undefined,
      profileLink: undefined,
      platform: undefined,
      uid: undefined,
      hasNixStore: false,
      bootFiles: []
    })
    expect(
      parseRemoteState(
        'boot-free-kb=2048\nboot-files=a-linux-6.6-Image b-initrd-linux-6.6-initrd extlinux.conf \n'
      )
    ).toMatchObject({
      bootFreeBytes: 2048 * 1024,
      bootFiles: ['a-linux-6.6-Image', 'b-initrd-linux-6.6-initrd', 'extlinux.conf']
    })
    expect(parseRemoteState('boot-free-kb=\n').bootFreeBytes).toBeUndefined()
    expect(generationOf('system-12-link')).toBe(12)
    expect(generationOf(undefined)).toBeUndefined()
  })
  it('reads a pending boot trial (its stage, systems and windows), and nothing from a broken record', () => {
    const trial = `trial=reached\ntrial-new=${TOP}\ntrial-previous=${PREV}\ntrial-previous-generation=3\ntrial-confirm-seconds=30\ntrial-login-seconds=300\n`
    expect(parseRemoteState(trial).trial).toEqual({
      stage: 'reached',
      system: TOP,
      previous: PREV,
      previousGeneration: 3,
      confirmSeconds: 30,
      loginSeconds: 300
    })
    expect(parseRemoteState(trial.replace('trial=reached', 'trial=pending')).trial?.stage).toBe('pending')
    for (const [field, broken] of [
      ['trial=reached', 'trial=done'],
      [`trial-new=${TOP}`, 'trial-new=/etc'],
      ['trial-confirm-seconds=30', 'trial-confirm-seconds=x']
    ])
      expect(parseRemoteState(trial.replace(field, broken)).trial).toBeUndefined()
  })
  it('reads the one-shot boot file the running system names; a path with shell or U-Boot words is refused before use', () => {
    expect(parseRemoteState('boot-once=/boot/firmware/nix-deploy-once\n').bootOnce).toBe(
      '/boot/firmware/nix-deploy-once'
    )
    expect(parseRemoteState('boot-once=\n').bootOnce).toBeUndefined()
    expect(isOnceFile('/boot/firmware/nix-deploy-once')).toBe(true)
    for (const bad of [
      'boot/firmware/x',
      '/boot/$(reboot)',
      '/boot/a b',
      '/boot/../etc/passwd',
      '/boot/x;y',
      ''
    ])
      expect(isOnceFile(bad)).toBe(false)
  })

  it('keeps only asked-for paths from the missing-paths answer', () => {
    expect([...parseMissing(`${TOP}\n/nix/store/zzz\nwarning: x\n`, new Set([TOP, PREV]))]).toEqual([TOP])
  })
})

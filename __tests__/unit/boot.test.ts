import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { needsReboot, normaliseParams, readBootIdentity } from '../../src/nix/boot'
import { parseRemoteState } from '../../src/target/remote-state'

const K = (v: string) => `/nix/store/${'k'.repeat(31)}${v}-linux-${v}/Image`
const I = (v: string) => `/nix/store/${'i'.repeat(31)}${v}-initrd-linux-${v}/initrd`
const M = (v: string) => `/nix/store/${'m'.repeat(31)}${v}-linux-${v}-modules`
const booted = { kernel: K('1'), initrd: I('1'), kernelModules: M('1'), kernelParams: 'console=ttyS0 quiet' }

describe('needsReboot', () => {
  it('is false when the kernel, initrd, modules and parameters are the same', () => {
    expect(needsReboot(booted, { ...booted })).toBe(false)
  })
  it.each([
    ['kernel', { kernel: K('2') }],
    ['initrd', { initrd: I('2') }],
    ['kernel modules', { kernelModules: M('2') }],
    ['kernel parameters', { kernelParams: 'console=ttyS0' }],
    ['a kernel where there was none', { kernel: undefined }]
  ])('is true when the %s change', (_what, change) => {
    expect(needsReboot(booted, { ...booted, ...change })).toBe(true)
  })
  it('is unknown without both sides; two systems without a kernel need none', () => {
    expect(needsReboot(undefined, booted)).toBeUndefined()
    expect(needsReboot(booted, undefined)).toBeUndefined()
    expect(needsReboot({}, { kernelParams: '' })).toBe(false)
  })
  it('compares kernel parameters as words', () => {
    expect(normaliseParams(' console=ttyS0   quiet\n')).toBe('console=ttyS0 quiet')
    expect(needsReboot(booted, { ...booted, kernelParams: 'console=ttyS0  quiet ' })).toBe(false)
  })
})

describe('what the target booted, and what the runner built', () => {
  it('reads /run/booted-system from the probe, or nothing when the target has none', () => {
    const top = `/nix/store/${'b'.repeat(32)}-nixos-system-pi3`
    const state = parseRemoteState(
      [
        `booted=${top}`,
        `booted-kernel=${K('1')}`,
        `booted-initrd=${I('1')}`,
        `booted-kernel-modules=${M('1')}`,
        'booted-kernel-params=console=ttyS0 quiet '
      ].join('\n')
    )
    expect(state.booted).toEqual({ system: top, ...booted })
    expect(parseRemoteState('booted=\nbooted-kernel=\n').booted).toBeUndefined()
    // Not a store path: ignored, never trusted.
    expect(parseRemoteState(`booted=${top}\nbooted-kernel=/tmp/x`).booted?.kernel).toBeUndefined()
  })
  it("reads a toplevel's links and kernel-params from the runner's files", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-boot-'))
    fs.writeFileSync(path.join(dir, 'Image'), 'kernel')
    const top = path.join(dir, 'top')
    fs.mkdirSync(top)
    fs.symlinkSync(path.join(dir, 'Image'), path.join(top, 'kernel'))
    fs.writeFileSync(path.join(top, 'kernel-params'), 'console=ttyS0\n')
    expect(await readBootIdentity(top)).toEqual({
      kernel: fs.realpathSync(path.join(dir, 'Image')),
      initrd: undefined,
      kernelModules: undefined,
      kernelParams: 'console=ttyS0'
    })
    fs.rmSync(dir, { recursive: true, force: true })
  })
})

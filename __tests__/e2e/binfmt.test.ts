import { execFileSync } from 'child_process'
import * as fs from 'fs'
import * as path from 'path'
import { deployInputs, describeE2E, qemuAarch64Enabled, runAction, testbed } from './harness'

/** Makes pi-nonce a configuration the runner has never built, so the build really runs aarch64 code. */
function newNonce(): void {
  fs.writeFileSync(path.join(testbed().TESTBED, 'fixture', 'nonce'), `nonce ${Date.now()} ${Math.random()}\n`)
}

describeE2E('QEMU binfmt on an x86_64 runner', () => {
  // The testbed's Pi runs aarch64 activation scripts: after each test the registration is back
  // (so no test depends on what another one left either).
  afterEach(() => {
    if (!qemuAarch64Enabled()) execFileSync('update-binfmts', ['--enable', 'qemu-aarch64'])
  })

  it('binfmt: auto registers QEMU when no registration exists, then builds aarch64 derivations', async () => {
    execFileSync('update-binfmts', ['--disable', 'qemu-aarch64'])
    expect(qemuAarch64Enabled()).toBe(false)
    newNonce()
    const run = await runAction(deployInputs('pi-nonce', { mode: 'build' }))
    expect(run.exitCode).toBe(0)
    expect(run.outputs.result).toBe('built')
    expect(run.log).toMatch(/registered QEMU binfmt for aarch64-linux \(qemu-aarch64, flags [A-Z]*F/)
    expect(run.log).toMatch(/building '\/nix\/store\/\S+-nixos-system-pi3-nonce.drv'/)
    expect(qemuAarch64Enabled()).toBe(true)
  }, 300_000)

  it('an existing registration is used as it is', async () => {
    if (!qemuAarch64Enabled()) execFileSync('update-binfmts', ['--enable', 'qemu-aarch64'])
    newNonce()
    const run = await runAction(deployInputs('pi-nonce', { mode: 'build' }))
    expect(run.exitCode).toBe(0)
    expect(run.log).toMatch(/QEMU binfmt for aarch64-linux already registered/)
  }, 300_000)

  it('binfmt: false leaves binfmt alone, and the build failure says how to fix it', async () => {
    execFileSync('update-binfmts', ['--disable', 'qemu-aarch64'])
    newNonce()
    const run = await runAction(deployInputs('pi-nonce', { mode: 'build', binfmt: 'false' }))
    expect(qemuAarch64Enabled()).toBe(false)
    expect(run.exitCode).not.toBe(0)
    expect(run.outputs.result).toBe('failed')
    expect(run.log).toMatch(
      /::error title=nix-deploy-action%3A build failed::building \S+ failed: .*aarch64-linux/
    )
    expect(run.log).toMatch(/The runner cannot build for aarch64-linux: keep binfmt: auto/)
  }, 300_000)
})

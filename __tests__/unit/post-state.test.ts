import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { readPendingSave } from '../../src/cache/store-cache'
import { post } from '../../src/post'
import { interceptStdout } from './stdout'

/**
 * The post step's state is a file the runner also fills from `save-state` commands in the main
 * step's output: what it reads back is checked before anything runs (a forged entry would hand
 * `nix copy` options and expressions of its author's choosing).
 */
const P = (name: string) => `/nix/store/${'a'.repeat(32)}-${name}`
const SETTINGS: Array<[string, string]> = [['sandbox', 'true']]
const good = {
  key: 'nix-deploy-aarch64-linux-abc-1-1-ff',
  paths: [P('system')],
  settings: SETTINGS,
  signed: false
}

describe("the post step's saved-cache state", () => {
  it('takes what the main step writes', () => {
    expect(readPendingSave(JSON.stringify(good), SETTINGS)).toEqual(good)
  })

  it('refuses anything else: options as paths, a key with other characters, other Nix settings, no JSON', () => {
    const forged = [
      { ...good, paths: ['--expr', 'builtins.exec ["sh" "-c" "touch /tmp/x"]'] },
      { ...good, paths: [] },
      { ...good, paths: [`${P('x')}/../../etc`] },
      { ...good, key: 'k;rm -rf /' },
      { ...good, settings: [['allow-unsafe-native-code-during-evaluation', 'true']] },
      { ...good, signed: 'yes' }
    ]
    for (const f of forged) expect(typeof readPendingSave(JSON.stringify(f), SETTINGS)).toBe('string')
    expect(typeof readPendingSave('{', SETTINGS)).toBe('string')
    expect(typeof readPendingSave('null', SETTINGS)).toBe('string')
  })

  it('a forged entry: the post step warns and runs no nix at all', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-post-'))
    const calls = path.join(dir, 'calls')
    fs.writeFileSync(path.join(dir, 'nix'), `#!/bin/sh\necho "$*" >>"${calls}"\n`, { mode: 0o755 })
    const saved = { ...process.env }
    Object.assign(process.env, {
      PATH: `${dir}:${process.env.PATH}`,
      STATE_storeCache: JSON.stringify({ ...good, paths: ['--expr', '1'] }),
      'INPUT_NIX-OPTIONS': 'sandbox = true',
      GITHUB_STEP_SUMMARY: path.join(dir, 'summary')
    })
    const stdout = interceptStdout()
    try {
      await post()
    } finally {
      stdout.restore()
      process.env = saved
    }
    expect(fs.existsSync(calls)).toBe(false)
    expect(stdout.text()).toMatch(/Store cache not saved: .*paths are not store paths/)
    fs.rmSync(dir, { recursive: true, force: true })
  })
})

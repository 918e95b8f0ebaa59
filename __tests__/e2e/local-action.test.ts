import { execFile } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { promisify } from 'util'
import { ROOT, describeE2E, fixturePath, piState, resetPi } from './harness'

/**
 * The actions/typescript-action way of running an action on one's own machine:
 * `npx local-action run . src/main.ts .env` (@github/local-action runs src/main.ts's run() with the
 * inputs of a dotenv file), here with the file scripts/local-env.sh writes for the testbed. A real
 * deploy to the Pi, from the TypeScript sources, not dist/.
 */
describeE2E('npx local-action run . src/main.ts .env deploys to the testbed', () => {
  beforeAll(() => {
    fixturePath('pi-gen2')
    resetPi()
  }, 300_000)

  it('deploys pi-gen2 with the inputs of scripts/local-env.sh’s file, and reports its outputs', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-local-action-'))
    const env = path.join(dir, '.env')
    try {
      await promisify(execFile)('bash', [path.join(ROOT, 'scripts', 'local-env.sh'), env, 'pi-gen2'])
      expect(fs.statSync(env).mode & 0o777).toBe(0o600)
      const { stdout } = await promisify(execFile)(
        path.join(ROOT, 'node_modules', '.bin', 'local-action'),
        ['run', ROOT, 'src/main.ts', env],
        { cwd: ROOT, timeout: 240_000, maxBuffer: 64 << 20, env: { ...process.env, GITHUB_WORKSPACE: dir } }
      )
      const outputs = Object.fromEntries(
        [...stdout.matchAll(/^::set-output name=([a-z-]+)::(.*)$/gm)].map(m => [m[1], m[2]])
      )
      expect(outputs).toMatchObject({ result: 'deployed', 'store-path': fixturePath('pi-gen2') })
      expect(piState().current).toBe(fixturePath('pi-gen2'))
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }, 300_000)
})

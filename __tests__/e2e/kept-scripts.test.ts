import { KEPT_SCRIPTS_DIR, keptName } from '../../src/target/kept-scripts'
import { KEPT_FILES } from '../../src/target/scripts'
import { deployInputs, describeE2E, fixturePath, onPi, piState, resetPi, runAction } from './harness'

/** Each kept file on the Pi: its name, mode, inode, mtime (s) and the SHA-256 of its content. */
function keptOnPi(): Map<string, { mode: string; inode: string; mtime: number; sha256: string }> {
  const out = onPi(
    `cd ${KEPT_SCRIPTS_DIR} 2>/dev/null || exit 0; for f in *; do [ -f "$f" ] || continue; ` +
      `printf '%s %s %s %s ' "$f" $(stat -c '%a %i %Y' "$f"); sha256sum < "$f" | cut -d' ' -f1; done`
  )
  const kept = new Map<string, { mode: string; inode: string; mtime: number; sha256: string }>()
  for (const line of out.split('\n').filter(Boolean)) {
    const [name, mode, inode, mtime, sha256] = line.split(' ')
    kept.set(name, { mode, inode, mtime: Number(mtime), sha256 })
  }
  return kept
}

const MARK = '/tmp/nda-kept-tampered'

describeE2E(
  'the scripts a Pi keeps: written by the first deploy of a release, checked before each run',
  () => {
    beforeAll(() => {
      resetPi()
      fixturePath('pi-gen1')
      fixturePath('pi-gen2')
      onPi(`rm -rf ${KEPT_SCRIPTS_DIR} ${MARK}`)
    }, 300_000)

    it('a deploy keeps them; the next runs them in place; one changed on the Pi is written again, never run', async () => {
      const deploy = async (config: string): Promise<void> => {
        const run = await runAction(deployInputs(config))
        if (run.exitCode !== 0) console.log(run.log)
        expect(run.exitCode).toBe(0)
        expect(run.outputs.result).toBe('deployed')
        expect(piState().current).toBe(fixturePath(config))
      }

      // A dry run changes nothing on the Pi: it keeps none (its commands carry their scripts).
      const dry = await runAction(deployInputs('pi-gen1', { mode: 'dry-activate' }))
      expect(dry.exitCode).toBe(0)
      expect(onPi(`test -e ${KEPT_SCRIPTS_DIR} && echo there || echo none`)).toBe('none')

      await deploy('pi-gen1')
      // Every file the scripts are made of, named by the SHA-256 of its text, private to root.
      const first = keptOnPi()
      expect([...first.keys()].sort()).toEqual(KEPT_FILES.map(keptName).sort())
      for (const [name, f] of first) {
        expect(f.sha256).toBe(name)
        expect(f.mode).toBe('600')
      }
      expect(onPi(`stat -c '%a %U' ${KEPT_SCRIPTS_DIR}`)).toBe('700 root')

      // Aged on the Pi: the next deploy runs them where they are (the same files, their mtime
      // refreshed by each run), writing none again.
      onPi(`touch -d 2020-01-01 ${KEPT_SCRIPTS_DIR}/*`)
      await deploy('pi-gen2')
      const second = keptOnPi()
      expect([...second.keys()].sort()).toEqual([...first.keys()].sort())
      for (const [name, f] of second) expect(f.inode).toBe(first.get(name)!.inode)
      const survey = keptName('survey.sh')
      expect(second.get(survey)!.mtime).toBeGreaterThan(Date.parse('2021-01-01') / 1000)

      // A file whose text is not its name's hash (an SD card's bad block, or a hand) is not run:
      // the deploy writes it again and goes on.
      onPi(`printf 'touch ${MARK}\\n' > ${KEPT_SCRIPTS_DIR}/${survey}`)
      await deploy('pi-gen1')
      expect(onPi(`test -e ${MARK} && echo ran || echo not-run`)).toBe('not-run')
      expect(keptOnPi().get(survey)!.sha256).toBe(survey)
    }, 300_000)
  }
)

/**
 * `npm run stress` (root; not part of `npm test`): STRESS_ROUNDS (default 20) rounds of two or three
 * concurrent runs against one Pi, each deploying a random configuration (some fail to activate, one
 * is slow), with the jump host's connections cut at a random moment in some rounds. After each round:
 *   - the Pi runs the system of the last run that took the lock and succeeded (or, if none did,
 *     what it ran before the round); a run whose outcome it could not know (it lost track) may have
 *     left its system or the one before;
 *   - the profile agrees with what runs;
 *   - no lock is left held once every agent is done (it is gone within its lease);
 *   - nothing of any deploy is left running on the Pi;
 *   - no secret showed in any log (runAction's leak check, modelled on the runner).
 * STRESS_SEED makes a sequence repeatable.
 */
import {
  assertNothingLeftOnPi,
  ActionRun,
  deployInputs,
  describeE2E,
  fixturePath,
  killJumpSessions,
  onPi,
  piState,
  resetPi,
  runAction
} from '../e2e/harness'

const ROUNDS = Number(process.env.STRESS_ROUNDS || 20)
let seed = Number(process.env.STRESS_SEED || Date.now() % 100000)
const random = (): number => {
  // mulberry32: small, seedable.
  seed |= 0
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}
const pick = <T>(xs: T[]): T => xs[Math.floor(random() * xs.length)]
const sleep = (ms: number) => new Promise(r => setTimeout(r, ms))

const CONFIGS = ['pi-gen0', 'pi-gen1', 'pi-gen2', 'pi-activation-fails', 'pi-slow-activation']

interface Attempt {
  config: string
  /** When the run printed what the target runs: the survey answered under its lock. */
  lockedAt?: number
  run?: ActionRun
  error?: string
}

describeE2E('stress: concurrent runs against one Pi', () => {
  const paths = new Map<string, string>()
  beforeAll(() => {
    resetPi()
    for (const c of CONFIGS) paths.set(c, fixturePath(c))
    console.log(`stress: ${ROUNDS} rounds, STRESS_SEED=${seed}`)
  }, 600_000)

  it(
    `${ROUNDS} rounds keep the Pi consistent`,
    async () => {
      const rows: string[] = []
      let failures = 0
      for (let round = 1; round <= ROUNDS; round++) {
        const before = piState().current
        const n = random() < 0.5 ? 2 : 3
        const cut = random() < 0.35 ? 500 + Math.floor(random() * 4000) : undefined
        const attempts: Attempt[] = Array.from({ length: n }, () => ({ config: pick(CONFIGS) }))
        const started = Date.now()
        const runs = attempts.map(async (a, i) => {
          await sleep(i * Math.floor(random() * 400))
          try {
            a.run = await runAction(
              deployInputs(a.config, { 'lock-timeout': '300', 'connect-timeout': '10' }),
              {
                timeoutMs: 400_000,
                onOutput: log => {
                  if (a.lockedAt === undefined && / runs \/nix\/store\/\S+; profile /.test(log))
                    a.lockedAt = Date.now()
                }
              }
            )
          } catch (e) {
            a.error = (e as Error).message
          }
        })
        const cutter = cut === undefined ? Promise.resolve() : sleep(cut).then(() => killJumpSessions())
        await Promise.all([...runs, cutter])
        // Agents finish (and free the lock) by themselves; wait for that within a lease.
        let lockFree = false
        for (let i = 0; i < 240 && !lockFree; i++) {
          lockFree =
            onPi('test -e /nix/var/nix-deploy-action/lock/owner && echo held || echo free') === 'free'
          if (!lockFree) await sleep(500)
        }
        const problems: string[] = []
        try {
          await assertNothingLeftOnPi(CONFIGS.map(c => paths.get(c)!))
        } catch (e) {
          problems.push((e as Error).message.split('\n')[0])
        }
        const after = piState()
        // Who took the lock, in order; the last one that succeeded decides what runs.
        const ordered = attempts
          .filter(a => a.lockedAt !== undefined)
          .sort((x, y) => x.lockedAt! - y.lockedAt!)
        let expected = [before]
        for (const a of ordered) {
          const result = a.run?.outputs.result
          const path = paths.get(a.config)!
          if (result === 'deployed' || result === 'unchanged') expected = [path]
          else if (result !== 'rolled-back' && /Activation agent started/.test(a.run?.log ?? ''))
            // Its agent ran but the run could not learn the outcome: the target kept it or rolled back.
            expected = [...expected, path]
        }
        if (!expected.includes(after.current))
          problems.push(`runs ${after.current}, expected one of ${expected.join(', ')}`)
        if (after.profile !== after.current) problems.push(`profile ${after.profile} differs from what runs`)
        if (!lockFree) problems.push('the lock is still held after every run and agent finished')
        for (const a of attempts)
          if (a.error) problems.push(`a run failed its checks: ${a.error.split('\n')[0]}`)
        if (problems.length > 0) failures++
        const outcome = attempts
          .map(a => `${a.config}=${a.run?.outputs.result || (a.error ? 'CHECK FAILED' : '?')}`)
          .join(' ')
        rows.push(
          `| ${round} | ${n} | ${cut === undefined ? '-' : `${cut} ms`} | ${outcome} | ${((Date.now() - started) / 1000).toFixed(1)} s | ${problems.length === 0 ? 'ok' : problems.join('; ')} |`
        )
        console.log(rows[rows.length - 1])
      }
      console.log(
        ['| round | runs | cut | results | time | checks |', '|---|---|---|---|---|---|', ...rows].join('\n')
      )
      console.log(
        `stress: ${ROUNDS - failures} of ${ROUNDS} rounds consistent (STRESS_SEED=${process.env.STRESS_SEED || 'random'})`
      )
      expect(failures).toBe(0)
    },
    24 * 3600_000
  )
})

import { Outcome, parseRollout, rollOut, Rollout } from '../../src/rollout'

/** Runs a rollout over machines whose outcomes are given; records the order of starts and the skips. */
async function run(
  outcomes: Record<string, Outcome>,
  rollout: Rollout,
  opts: { parallel?: number; failFast?: boolean } = {}
): Promise<{ started: string[]; skipped: Record<string, string>; maxConcurrent: number }> {
  const started: string[] = []
  const skipped: Record<string, string> = {}
  let running = 0
  let maxConcurrent = 0
  await rollOut(Object.keys(outcomes), m => m, {
    rollout,
    parallel: opts.parallel ?? 4,
    failFast: opts.failFast ?? false,
    deploy: async m => {
      started.push(m)
      running++
      maxConcurrent = Math.max(maxConcurrent, running)
      await new Promise(r => setImmediate(r))
      running--
      return outcomes[m]
    },
    skip: (m, why) => (skipped[m] = why)
  })
  return { started, skipped, maxConcurrent }
}

describe('rollout', () => {
  it('parses all, canary and batch sizes, and refuses anything else', () => {
    const problems: string[] = []
    expect(parseRollout('', problems)).toEqual({ kind: 'all' })
    expect(parseRollout('canary', problems)).toEqual({ kind: 'canary' })
    expect(parseRollout('3', problems)).toEqual({ kind: 'batches', size: 3 })
    expect(problems).toEqual([])
    parseRollout('0', problems)
    parseRollout('half', problems)
    expect(problems).toEqual([
      'rollout: "0" is not all, canary or a batch size (a whole number of at least 1)',
      'rollout: "half" is not all, canary or a batch size (a whole number of at least 1)'
    ])
  })

  it('all: every machine, up to parallel at a time; one failing does not stop the others', async () => {
    const r = await run(
      { a: 'failed', b: 'changed', c: 'changed', d: 'changed' },
      { kind: 'all' },
      { parallel: 2 }
    )
    expect(r.started.sort()).toEqual(['a', 'b', 'c', 'd'])
    expect(r.maxConcurrent).toBe(2)
    expect(r.skipped).toEqual({})
  })

  it('canary: a failing canary stops the rest, which are skipped saying why', async () => {
    const r = await run({ a: 'failed', b: 'changed', c: 'changed' }, { kind: 'canary' })
    expect(r.started).toEqual(['a'])
    expect(r.skipped).toEqual({
      b: 'not deployed: the canary failed (a; rollout: canary)',
      c: 'not deployed: the canary failed (a; rollout: canary)'
    })
  })

  it('canary: after one that changed, the rest together; an unchanged canary proves nothing', async () => {
    const r = await run(
      { a: 'unchanged', b: 'changed', c: 'changed', d: 'changed' },
      { kind: 'canary' },
      { parallel: 4 }
    )
    // a was unchanged, so b was the canary, alone; then c and d together.
    expect(r.started).toEqual(['a', 'b', 'c', 'd'])
    expect(r.maxConcurrent).toBe(2)
    const failedLater = await run({ a: 'unchanged', b: 'failed', c: 'changed' }, { kind: 'canary' })
    expect(failedLater.started).toEqual(['a', 'b'])
    expect(Object.keys(failedLater.skipped)).toEqual(['c'])
  })

  it('batches: in order, a failed batch stops the later ones; fail-fast skips the rest of its own batch', async () => {
    const r = await run(
      { a: 'changed', b: 'failed', c: 'changed', d: 'changed', e: 'changed' },
      { kind: 'batches', size: 2 }
    )
    expect(r.started).toEqual(['a', 'b'])
    expect(r.skipped).toEqual({
      c: 'not deployed: an earlier batch failed (b; rollout: batches of 2)',
      d: 'not deployed: an earlier batch failed (b; rollout: batches of 2)',
      e: 'not deployed: an earlier batch failed (b; rollout: batches of 2)'
    })
    const ff = await run(
      { a: 'failed', b: 'changed', c: 'changed' },
      { kind: 'batches', size: 3 },
      { parallel: 1, failFast: true }
    )
    expect(ff.started).toEqual(['a'])
    expect(ff.skipped.b).toBe('not deployed: another machine failed and fail-fast is on')
    expect(ff.skipped.c).toBe('not deployed: another machine failed and fail-fast is on')
  })
})

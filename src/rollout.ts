/**
 * In which order a fleet's machines deploy: all at once (up to `parallel` at a time), a canary
 * first, or batches of N. Pure orchestration over a deploy function, so every path is unit-tested
 * without machines; fleet.ts gives it the real deploy.
 */

/** rollout: `all` (default), `canary`, or batches of `size` machines. */
export type Rollout = { kind: 'all' } | { kind: 'canary' } | { kind: 'batches'; size: number }

/** Parses the rollout input; when it is none of the forms, pushes a problem (and returns `all`). */
export function parseRollout(text: string, problems: string[]): Rollout {
  if (text === '' || text === 'all') return { kind: 'all' }
  if (text === 'canary') return { kind: 'canary' }
  if (/^[0-9]{1,4}$/.test(text) && Number(text) >= 1) return { kind: 'batches', size: Number(text) }
  problems.push(
    `rollout: ${JSON.stringify(text)} is not all, canary or a batch size (a whole number of at least 1)`
  )
  return { kind: 'all' }
}

/** What one machine's deploy came to, as the rollout sees it. */
export type Outcome = 'changed' | 'unchanged' | 'failed'

export interface RolloutOptions<M> {
  rollout: Rollout
  /** At most this many deploys at a time. */
  parallel: number
  /** Within a batch: once one failed, machines of the batch not yet started are skipped. */
  failFast: boolean
  deploy: (m: M) => Promise<Outcome>
  /** A machine that will not be deployed, and why. */
  skip: (m: M, why: string) => void
}

/**
 * Deploys `machines` as the rollout says. A failed batch always stops the later ones (their
 * machines are skipped, saying which machine failed); a canary that was already unchanged proves
 * nothing, so the next machine is the canary, until one changed (or all were unchanged).
 */
export async function rollOut<M>(machines: M[], name: (m: M) => string, o: RolloutOptions<M>): Promise<void> {
  const queue = [...machines]
  const stopAfter = (failed: M[], what: string): void => {
    const why = `not deployed: ${what} failed (${failed.map(name).join(', ')}; rollout: ${describe(o.rollout)})`
    for (const m of queue.splice(0)) o.skip(m, why)
  }
  if (o.rollout.kind === 'canary') {
    while (queue.length > 0) {
      const canary = queue.shift()!
      const outcome = await o.deploy(canary)
      if (outcome === 'failed') return stopAfter([canary], 'the canary')
      if (outcome === 'changed') break
    }
  }
  const size = o.rollout.kind === 'batches' ? o.rollout.size : queue.length
  while (queue.length > 0) {
    const batch = queue.splice(0, size)
    const failed = await deployBatch(batch, o)
    if (failed.length > 0) return stopAfter(failed, 'an earlier batch')
  }
}

function describe(r: Rollout): string {
  return r.kind === 'batches' ? `batches of ${r.size}` : r.kind
}

/** One batch, at most `parallel` at a time; returns the machines that failed. */
async function deployBatch<M>(batch: M[], o: RolloutOptions<M>): Promise<M[]> {
  const failed: M[] = []
  await inParallel(batch, o.parallel, async m => {
    if (failed.length > 0 && o.failFast) o.skip(m, 'not deployed: another machine failed and fail-fast is on')
    else if ((await o.deploy(m)) === 'failed') failed.push(m)
  })
  return failed
}

/** Runs `fn` over `items` in order, at most `limit` at a time. */
export async function inParallel<T>(
  items: T[],
  limit: number,
  fn: (item: T) => Promise<void>
): Promise<void> {
  const pending = [...items]
  const worker = async (): Promise<void> => {
    for (let item = pending.shift(); item !== undefined; item = pending.shift()) await fn(item)
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
}

import { PathInfo } from '../../src/nix/closure'
import { substituteOnTarget } from '../../src/deploy/copy'
import { Target, TargetStore } from '../../src/target/target'
import { MemoryLog } from './fake-target'

/**
 * substituteOnTarget's choice of what to ask for (pure logic over a recorded store: the e2e
 * shards and substitute suites fetch for real from a cache and from a Pi's own substituter).
 */
const P = (name: string, c: string): string => `/nix/store/${c.repeat(32)}-${name}`
const toplevel = P('nixos-system-pi', 't')
const lib = P('lib', 'l')
const app = P('app', 'a')
const toCopy: PathInfo[] = [
  { path: lib, narSize: 10, references: [] },
  { path: app, narSize: 20, references: [lib] },
  { path: toplevel, narSize: 30, references: [app] }
]
const cache = { uri: 'http://cache.lan:8080', publicKey: 'cache-1:AAAA' }

/** A store that fetches what `fetches` holds when asked for it, and records what it was asked. */
function target(fetches: (asked: string[]) => string[]) {
  const have = new Set<string>()
  const asked: { substitute: string[][]; queryMissing: string[][] } = { substitute: [], queryMissing: [] }
  const store: Partial<TargetStore> = {
    substitute: async paths => {
      asked.substitute.push(paths)
      for (const p of fetches(paths)) have.add(p)
      return new Set(paths.filter(p => !have.has(p)))
    },
    queryMissing: async paths => {
      asked.queryMissing.push(paths)
      return new Set(paths.filter(p => !have.has(p)))
    }
  }
  return { asked, target: { label: 'pi', log: new MemoryLog(), store } as unknown as Target }
}
/** As the survey answers when the target listed the closure from the plan's cache itself. */
const plan = { toCopy, targetCodecs: new Set<string>(), listedFromCache: true }

describe("substituting on the target from a deploy plan's cache", () => {
  it('asks for the system alone: its closure comes with it, and no list of paths is sent', async () => {
    const t = target(() => [lib, app, toplevel])
    const r = await substituteOnTarget(t.target, plan, cache, toplevel)
    expect(t.asked).toEqual({ substitute: [[toplevel]], queryMissing: [] })
    expect(r.plan.toCopy).toEqual([])
    expect(r.substituted.map(p => p.path)).toEqual([lib, app, toplevel])
  })

  it('the system still missing: asked for every path, as without a plan (its own substituters may have them); only the rest is copied', async () => {
    // The plan's cache gives nothing more; the target's own substituter has lib.
    const t = target(asked => (asked.length > 1 ? [lib] : []))
    const caches: unknown[] = []
    const substitute = t.target.store.substitute.bind(t.target.store)
    t.target.store.substitute = async (paths, from, timeoutMs) => {
      caches.push(from)
      return substitute(paths, from, timeoutMs)
    }
    const r = await substituteOnTarget(t.target, plan, cache, toplevel)
    expect(t.asked).toEqual({ substitute: [[toplevel], [lib, app, toplevel]], queryMissing: [] })
    // The first tried every path from the plan's cache: the list goes to its own substituters only.
    expect(caches).toEqual([cache, undefined])
    expect(r.plan.toCopy.map(p => p.path)).toEqual([app, toplevel])
    expect(r.substituted.map(p => p.path)).toEqual([lib])
  })

  it('a target that could not list the closure from the cache is asked for every path at once', async () => {
    const t = target(asked => asked)
    const r = await substituteOnTarget(t.target, { ...plan, listedFromCache: undefined }, cache, toplevel)
    expect(t.asked).toEqual({ substitute: [[lib, app, toplevel]], queryMissing: [] })
    expect(r.plan.toCopy).toEqual([])
  })

  it('a target the cache did not answer during the survey: asked for every path from its own substituters only, not that cache', async () => {
    const t = target(asked => asked.filter(p => p === lib))
    const caches: unknown[] = []
    const substitute = t.target.store.substitute.bind(t.target.store)
    t.target.store.substitute = async (paths, from, timeoutMs) => {
      caches.push(from)
      return substitute(paths, from, timeoutMs)
    }
    const r = await substituteOnTarget(
      t.target,
      { ...plan, listedFromCache: undefined, cacheUnanswered: true },
      cache,
      toplevel
    )
    expect(t.asked.substitute).toEqual([[lib, app, toplevel]])
    expect(caches).toEqual([undefined])
    expect(r.plan.toCopy.map(p => p.path)).toEqual([app, toplevel])
  })

  it("from the target's own substituters (no plan): every path is asked for", async () => {
    const t = target(asked => asked.filter(p => p === lib))
    const r = await substituteOnTarget(t.target, plan, undefined, toplevel)
    expect(t.asked).toEqual({ substitute: [[lib, app, toplevel]], queryMissing: [] })
    expect(r.plan.toCopy.map(p => p.path)).toEqual([app, toplevel])
  })
})

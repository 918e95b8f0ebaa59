import * as fs from 'fs'
import * as path from 'path'

/**
 * The shape of src/ (../shared/DESIGN.md, ARCHITECTURE.md): arrows point down only -- index → main →
 * build / fleet / plan → deploy → target → ssh; nix, report, cache, log and the small shared modules
 * are used from above and never reach up to the orchestration -- and no module, nor folder, imports
 * one that imports it back.
 */
const SRC = path.join(__dirname, '..', '..', 'src')

function sources(dir: string): string[] {
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .flatMap(e =>
      e.isDirectory()
        ? sources(path.join(dir, e.name))
        : e.name.endsWith('.ts')
          ? [path.join(dir, e.name)]
          : []
    )
}

/** Each source file (relative to src/, without .ts) with the project files it imports. */
function graph(): Map<string, string[]> {
  const g = new Map<string, string[]>()
  for (const file of sources(SRC)) {
    const text = fs.readFileSync(file, 'utf8')
    const deps = [...text.matchAll(/^(?:import|export)[^'"]*from '(\.[^']+)'/gm)].map(m =>
      path.relative(SRC, path.resolve(path.dirname(file), m[1]))
    )
    g.set(path.relative(SRC, file).replace(/\.ts$/, ''), [...new Set(deps)])
  }
  return g
}

const ORCHESTRATION = ['index', 'main', 'build', 'fleet', 'plan', 'post', 'inputs']

describe('the layers of src/', () => {
  const g = graph()
  it.each([
    ['deploy/', [...ORCHESTRATION]],
    ['target/', [...ORCHESTRATION, 'deploy/']],
    ['ssh/', [...ORCHESTRATION, 'deploy/', 'target/']]
  ])('%s imports nothing above it', (layer, above) => {
    const wrong = [...g]
      .filter(([f]) => f.startsWith(layer))
      .flatMap(([f, deps]) =>
        deps
          .filter(d => above.some(a => (a.endsWith('/') ? d.startsWith(a) : d === a)))
          .map(d => `${f} -> ${d}`)
      )
    expect(wrong).toEqual([])
  })
  it.each(['nix/', 'cache/', 'report/', 'log/'])('%s imports nothing of the orchestration', layer => {
    const wrong = [...g]
      .filter(([f]) => f.startsWith(layer))
      .flatMap(([f, deps]) => deps.filter(d => ORCHESTRATION.includes(d)).map(d => `${f} -> ${d}`))
    expect(wrong).toEqual([])
  })
  it('has no cycle between folders (each folder taken as one node)', () => {
    const folderOf = (f: string): string => (f.includes('/') ? f.split('/')[0] : f)
    const edges = new Map<string, Set<string>>()
    for (const [f, deps] of g)
      for (const d of deps)
        if (folderOf(f) !== folderOf(d)) {
          const from = edges.get(folderOf(f)) ?? new Set<string>()
          edges.set(folderOf(f), from.add(folderOf(d)))
        }
    const reaches = (from: string, to: string, seen = new Set<string>()): boolean =>
      [...(edges.get(from) ?? [])].some(
        n => n === to || (!seen.has(n) && (seen.add(n), reaches(n, to, seen)))
      )
    const cycles = [...edges].flatMap(([a, tos]) =>
      [...tos].filter(b => reaches(b, a)).map(b => `${a} <-> ${b}`)
    )
    expect(cycles).toEqual([])
  })
  it('has no import cycle', () => {
    const cycles: string[] = []
    const state = new Map<string, 'visiting' | 'done'>()
    const visit = (f: string, trail: string[]): void => {
      if (state.get(f) === 'done') return
      if (state.get(f) === 'visiting') {
        cycles.push([...trail.slice(trail.indexOf(f)), f].join(' -> '))
        return
      }
      state.set(f, 'visiting')
      for (const d of g.get(f) ?? []) visit(d, [...trail, f])
      state.set(f, 'done')
    }
    for (const f of g.keys()) visit(f, [])
    expect(cycles).toEqual([])
  })
  it('lets only main, plan and post see the inputs: below the plan, phases take their slice of it', () => {
    const readers = [...g].filter(([, deps]) => deps.includes('inputs')).map(([f]) => f)
    expect(readers.sort()).toEqual(['main', 'plan', 'post'])
  })
  it('has one writer of annotations, outputs, the job summary and the step failure: src/report/publish.ts', () => {
    const writers = sources(SRC)
      .filter(f => !f.endsWith('.generated.ts'))
      .filter(f =>
        /\bcore\.(warning|error|notice|setFailed|setOutput|summary)\b/.test(fs.readFileSync(f, 'utf8'))
      )
      .map(f => path.relative(SRC, f))
    expect(writers).toEqual(['report/publish.ts'])
  })
})

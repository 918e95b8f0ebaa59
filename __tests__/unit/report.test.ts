import { generationOf, parseRemoteState } from '../../src/target/remote-state'
import { parseGenerations, parseMissing } from '../../src/target/parse'
import { outputsOf, DeployReport, worstReport } from '../../src/report/report'
import { escapeHtml, renderSummary, SUMMARY_LIMIT, truncateSummary } from '../../src/report/summary'

const TOP = '/nix/store/' + 'a'.repeat(32) + '-nixos-system-pi3-gen1'
const PREV = '/nix/store/' + 'b'.repeat(32) + '-nixos-system-pi3-gen0'

describe('remote state', () => {
  it('parses the probe output and ignores anything that is not a store path', () => {
    const s = parseRemoteState(
      `current=${TOP}\nprofile=${PREV}\nprofile-link=system-12-link\nplatform=aarch64-linux\nuid=0\nnix-store=/run/current-system/sw/bin/nix-store\n`
    )
    expect(s).toEqual({
      current: TOP,
      profile: PREV,
      profileLink: 'system-12-link',
      platform: 'aarch64-linux',
      uid: 0,
      hasNixStore: true
    })
    expect(parseRemoteState('current=/etc\nprofile-link=../../etc\nuid=x\nnix-store=\n')).toEqual({
      current: undefined,
      profile: undefined,
      profileLink: undefined,
      platform: undefined,
      uid: undefined,
      hasNixStore: false
    })
    expect(generationOf('system-12-link')).toBe(12)
    expect(generationOf(undefined)).toBeUndefined()
  })
  it('keeps only asked-for paths from the missing-paths answer', () => {
    expect([...parseMissing(`${TOP}\n/nix/store/zzz\nwarning: x\n`, new Set([TOP, PREV]))]).toEqual([TOP])
  })
})

describe('outputs', () => {
  it('renders every output as a string, integers and booleans included', () => {
    const r: DeployReport = {
      result: 'deployed',
      storePath: TOP,
      previousStorePath: PREV,
      changed: true,
      closureSize: 1234,
      copiedBytes: 99,
      generation: 3,
      timings: [],
      warnings: []
    }
    expect(outputsOf(r)).toEqual({
      result: 'deployed',
      'store-path': TOP,
      'previous-store-path': PREV,
      changed: 'true',
      'closure-size': '1234',
      'copied-bytes': '99',
      generation: '3',
      'cache-hit': 'false',
      results: JSON.stringify({
        configuration: { host: '', result: 'deployed', 'store-path': TOP, generation: '3', changed: 'true' }
      })
    })
    expect(outputsOf({ result: 'unchanged', timings: [], warnings: [] })['copied-bytes']).toBe('0')
    expect(outputsOf({ result: 'failed', timings: [], warnings: [] })).toMatchObject({
      changed: 'false',
      'copied-bytes': ''
    })
  })
})

describe('several machines', () => {
  const host = (result: DeployReport['result'], extra: Partial<DeployReport> = {}): DeployReport => ({
    result,
    timings: [{ phase: 'copy', ms: 2000 }],
    warnings: [],
    ...extra
  })
  const run = (...hosts: Array<[string, DeployReport]>): DeployReport => ({
    result: worstReport(hosts.map(h => h[1])).result,
    timings: [],
    warnings: [],
    builtDerivations: 4,
    hosts: hosts.map(([machine, report]) => ({ machine, report }))
  })

  it('the single-valued outputs describe the worst result; results has every machine', () => {
    const r = run(
      ['pi3', host('deployed', { host: 'root@10.0.0.2:22', storePath: TOP, generation: 4, changed: true })],
      ['pi3b', host('rolled-back', { host: 'root@10.0.0.3:22', storePath: PREV })],
      ['pi3c', host('unchanged', { host: 'root@10.0.0.4:22', storePath: TOP })]
    )
    const o = outputsOf(r)
    expect(o.result).toBe('rolled-back')
    expect(o['store-path']).toBe(PREV)
    expect(JSON.parse(o.results)).toEqual({
      pi3: {
        host: 'root@10.0.0.2:22',
        result: 'deployed',
        'store-path': TOP,
        generation: '4',
        changed: 'true'
      },
      pi3b: {
        host: 'root@10.0.0.3:22',
        result: 'rolled-back',
        'store-path': PREV,
        generation: '',
        changed: 'false'
      },
      pi3c: {
        host: 'root@10.0.0.4:22',
        result: 'unchanged',
        'store-path': TOP,
        generation: '',
        changed: 'false'
      }
    })
    expect(worstReport([host('unchanged'), host('deployed')]).result).toBe('deployed')
    expect(worstReport([host('deployed'), host('skipped'), host('failed')]).result).toBe('failed')
  })

  it('renders a verdict counting failures, a row per machine, and each machine in details (open when failed)', () => {
    const md = renderSummary(
      run(
        ['pi3', host('deployed', { host: 'root@10.0.0.2:22', storePath: TOP })],
        ['<evil>', host('failed', { error: { message: 'copy broke', hint: 'retry', phase: 'copy' } })]
      )
    )
    const lines = md.split('\n')
    expect(lines[0]).toBe('### nix-deploy-action: ❌ Failed (1 of 2 machines)')
    expect(md).toContain(`| pi3 | root@10.0.0.2:22 |  | deployed | ${TOP} |`)
    expect(md).toContain('| &#60;evil&#62; |')
    expect(md).toContain('<details><summary>pi3: ✅ Deployed</summary>')
    expect(md).toContain('<details open><summary>&#60;evil&#62;: ❌ Failed</summary>')
    expect(md).toContain('**Error (copy):** copy broke')
    expect(md).not.toContain('<evil>')
  })
})

describe('summary', () => {
  it('starts with the verdict and escapes everything from Nix or the Pi', () => {
    const md = renderSummary({
      result: 'failed',
      storePath: TOP,
      timings: [{ phase: 'build', ms: 1500 }],
      warnings: ['<b>warn</b>'],
      error: {
        message: 'builder failed: <script>alert(1)</script>',
        hint: 'fix | it',
        phase: 'build',
        details: '</pre><img src=x>'
      }
    })
    expect(md.split('\n')[0]).toBe('### nix-deploy-action: ❌ Failed')
    expect(md).not.toContain('<script>')
    expect(md).not.toContain('<img')
    expect(md).not.toContain('<b>warn')
    expect(md).toContain('&#60;script&#62;')
    expect(md).toContain('| build | 1.5 s |')
    expect(md).toContain('fix &#124; it')
  })
  it.each(['deployed', 'unchanged', 'built', 'dry-activated', 'rolled-back'] as const)(
    'has a verdict for %s',
    result => {
      expect(renderSummary({ result, timings: [], warnings: [] }).split('\n')[0]).toMatch(
        /^### nix-deploy-action: \S+ \w/
      )
    }
  )
  it('stays under the 1 MiB limit with an explicit note, closing what it cut', () => {
    const md = renderSummary({
      result: 'deployed',
      activationLog: 'x'.repeat(3 * 1024 * 1024),
      timings: [],
      warnings: []
    })
    expect(Buffer.byteLength(md)).toBeLessThanOrEqual(SUMMARY_LIMIT)
    expect(md).toMatch(/summary truncated/)
    expect(md).toMatch(/<\/pre><\/details>\n\n\*\*\(summary truncated/)
    expect(truncateSummary('short')).toBe('short')
  })
  it('escapes quotes and backticks too', () => {
    expect(escapeHtml(`"'\`&`)).toBe('&#34;&#39;&#96;&#38;')
  })
})

describe('keep-generations', () => {
  const { generationsToDelete } =
    require('../../src/deploy/generations') as typeof import('../../src/deploy/generations')
  const S = (c: string) => '/nix/store/' + c.repeat(32) + '-nixos-system'
  const gens = parseGenerations(
    [
      `system-1-link ${S('a')}`,
      `system-2-link ${S('b')}`,
      `system-3-link ${S('c')}`,
      `system-4-link ${S('d')}`,
      `system-5-link ${S('c')}`,
      'garbage',
      'running x'
    ].join('\n')
  ).generations
  it('parses generation links', () => {
    expect(gens.map(g => g.number)).toEqual([1, 2, 3, 4, 5])
  })
  it('keeps the newest N', () => {
    expect(generationsToDelete(gens, 2, { profileGeneration: 5 })).toEqual([1, 2, 3])
  })
  it('keeps a generation for the running and the booted system when no kept one holds it', () => {
    expect(
      generationsToDelete(gens, 1, { profileGeneration: 5, runningPath: S('a'), bootedPath: S('b') })
    ).toEqual([3, 4])
    // gen 5 already holds c: gen 3 (also c) need not stay.
    expect(generationsToDelete(gens, 1, { profileGeneration: 5, runningPath: S('c') })).toEqual([1, 2, 3, 4])
  })
  it('never deletes the current profile generation', () => {
    expect(generationsToDelete(gens, 1, { profileGeneration: 2 })).toEqual([1, 3, 4])
  })
})

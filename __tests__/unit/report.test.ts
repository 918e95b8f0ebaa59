import { outputsOf, DeployReport, worstReport } from '../../src/report/report'
import { renderSummary } from '../../src/report/summary'

const TOP = '/nix/store/' + 'a'.repeat(32) + '-nixos-system-pi3-gen1'
const PREV = '/nix/store/' + 'b'.repeat(32) + '-nixos-system-pi3-gen0'

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
      needsReboot: true,
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
      'needs-reboot': 'true',
      'cache-hit': 'false',
      'deploy-plan': '',
      results: JSON.stringify({
        configuration: {
          host: '',
          result: 'deployed',
          'store-path': TOP,
          generation: '3',
          changed: 'true',
          'needs-reboot': 'true',
          'copied-bytes': '99',
          shard: '',
          'shard-outcome': ''
        }
      })
    })
    expect(outputsOf({ result: 'unchanged', timings: [], warnings: [] })['copied-bytes']).toBe('0')
    expect(outputsOf({ result: 'failed', timings: [], warnings: [] })).toMatchObject({
      changed: 'false',
      'copied-bytes': '',
      'needs-reboot': ''
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
      [
        'pi3',
        host('deployed', {
          host: 'root@10.0.0.2:22',
          storePath: TOP,
          generation: 4,
          changed: true,
          needsReboot: false
        })
      ],
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
        changed: 'true',
        'needs-reboot': 'false',
        'copied-bytes': '0',
        shard: '',
        'shard-outcome': ''
      },
      pi3b: {
        host: 'root@10.0.0.3:22',
        result: 'rolled-back',
        'store-path': PREV,
        generation: '',
        changed: 'false',
        'needs-reboot': '',
        'copied-bytes': '0',
        shard: '',
        'shard-outcome': ''
      },
      pi3c: {
        host: 'root@10.0.0.4:22',
        result: 'unchanged',
        'store-path': TOP,
        generation: '',
        changed: 'false',
        'needs-reboot': '',
        'copied-bytes': '0',
        shard: '',
        'shard-outcome': ''
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
    // What failed and what to do come before the table.
    const failedAt = lines.indexOf('**&#60;evil&#62; failed (copy):** copy broke')
    expect(failedAt).toBeGreaterThan(0)
    expect(lines[failedAt + 2]).toBe('**What to do:** retry')
    expect(failedAt).toBeLessThan(lines.findIndex(l => l.startsWith('| Machine |')))
    // The table: the host as code (no mailto: autolink), the store path short; the full one in the details.
    const [name, hash] = /^\/nix\/store\/([0-9a-z]{32})-(.+)$/.exec(TOP)!.slice(1).reverse()
    expect(md).toContain(
      `| pi3 | <code>root@10.0.0.2:22</code> |  | deployed | ${name} (${hash.slice(0, 8)}) |`
    )
    expect(md).toContain(`| Store path | <code>${TOP}</code> |`)
    expect(md).toContain('| &#60;evil&#62; |')
    expect(md).toContain('<details><summary>pi3: ✅ Deployed</summary>')
    expect(md).toContain('<details open><summary>&#60;evil&#62;: ❌ Failed</summary>')
    expect(md).toContain('**Error (copy):** copy broke')
    expect(md).not.toContain('<evil>')
  })

  /** pi3, deployed and then put back by rollback-fleet because pi3b failed. */
  const putBackForPi3b = (): [string, DeployReport] => [
    'pi3',
    host('rolled-back', { rolledBackTo: PREV, fleetRollback: 'another machine of the fleet failed (pi3b)' })
  ]

  it('rollback-fleet: a machine put back because another failed is counted apart and said so, not as failed', () => {
    const md = renderSummary(
      run(putBackForPi3b(), [
        'pi3b',
        host('failed', { error: { message: 'health check failed', hint: 'fix it', phase: 'activate' } })
      ])
    )
    const lines = md.split('\n')
    expect(lines[0]).toBe(
      '### nix-deploy-action: ❌ Failed (1 of 2 machines; 1 rolled back by rollback-fleet)'
    )
    expect(md).toContain(
      `**pi3 rolled back (rollback-fleet):** back on <code>${PREV}</code>: another machine of the fleet failed (pi3b)`
    )
    expect(md).not.toContain('**pi3 failed')
    expect(md).toContain(
      '<details open><summary>pi3: ↩️ Rolled back by rollback-fleet: another machine failed</summary>'
    )
  })

  it('rollback-fleet: a machine whose own deploy failed after its activation, put back, is one of the failures, its error shown', () => {
    const md = renderSummary(
      run(putBackForPi3b(), [
        'pi3b',
        host('rolled-back', {
          rolledBackTo: PREV,
          failureRolledBack: 'its own deploy failed after activating the new system',
          error: { message: 'lost the SSH connection', hint: 'check the link', phase: 'verify' }
        })
      ])
    )
    const lines = md.split('\n')
    expect(lines[0]).toMatch(/\(1 of 2 machines; 1 rolled back by rollback-fleet\)$/)
    expect(md).toContain('**pi3b failed (verify):** lost the SSH connection')
    expect(md).toContain(
      `**pi3b rolled back (rollback-fleet):** back on <code>${PREV}</code>: its own deploy failed after activating the new system`
    )
    expect(md).toContain(
      '<details open><summary>pi3b: ↩️ Rolled back by rollback-fleet after its own deploy failed</summary>'
    )
  })
})

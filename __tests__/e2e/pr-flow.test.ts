import {
  deployInputs,
  describeE2E,
  fixturePath,
  installedState,
  piState,
  resetPi,
  runAction,
  testbed
} from './harness'

/**
 * A pull request as examples/pr-dry-run.yml runs it, end to end on the testbed: the Pi runs the main
 * branch's system (fixture gen0) and the PR changes it to gen2 (hello 2.12 → 2.12.1, pi-tools and
 * htop added).
 *   job `build`         every PR, forks included: no secrets, no variables, never connects; the
 *                       diff is against the base branch's configuration (diff-against);
 *   job `dry-activate`  trusted PRs only: copies the PR's system to the Pi, reports the package diff
 *                       against what the Pi runs and the units dry-activate would touch, and leaves
 *                       the Pi's running system, profile and boot entry as they were.
 * And a fork's run of the dry-activate job (secrets and variables empty) degrades to a build.
 */
describeE2E('a pull request: dry-run build for everyone, dry-activate for trusted PRs', () => {
  let gen0: string, gen2: string
  const pr = 'pi-gen2'
  beforeAll(() => {
    gen0 = fixturePath('pi-gen0')
    gen2 = fixturePath(pr)
  }, 300_000)
  // Each job starts from the Pi running the main branch's system; the one after merge makes the
  // PR's dry-activate run itself first.
  beforeEach(() => resetPi(), 60_000)

  /** Warning annotations, except the one every run on the testbed has (no cache service here). */
  const warnings = (log: string): string[] =>
    log.split('\n').filter(l => l.startsWith('::warning') && !l.includes('No GitHub Actions cache service'))

  const expectPackageDiff = (summary: string): void => {
    expect(summary).toContain('| ↕ | hello | 2.12 | 2.12.1 |')
    expect(summary).toContain('| + | htop | | 3.3.0 |')
    expect(summary).toContain('| + | pi-tools | | 1.0 |')
    expect(summary).toMatch(/1 changed, 2 added, 0 removed;/)
  }

  it('job `build` (a fork: no secrets, no variables): builds, diffs against the base branch, never connects', async () => {
    const t = testbed()
    const run = await runAction(
      deployInputs(pr, {
        mode: 'build',
        'diff-against': `${t.TESTBED_FIXTURE}#pi-gen0`,
        'target-host': '',
        'jump-host': '',
        'ssh-private-key': '',
        'known-hosts': ''
      })
    )
    expect(run.exitCode).toBe(0)
    expect(run.outputs).toMatchObject({ result: 'built', 'store-path': gen2, changed: 'false' })
    const lines = run.summary.split('\n')
    expect(lines[0]).toBe('### nix-deploy-action: ✅ Built (not deployed)')
    expect(run.summary).toContain(`| Store path | <code>${gen2}</code> |`)
    expect(run.summary).toMatch(/#### Changes against .*pi-gen0/)
    expectPackageDiff(run.summary)
    expect(run.summary).not.toContain('| connect |')
    expect(run.log).not.toMatch(/::error/)
    expect(warnings(run.log)).toEqual([])
    expect(piState()).toMatchObject({ current: gen0, profile: gen0, generations: ['system-1-link'] })
  }, 300_000)

  it('job `dry-activate` (trusted PR): diff against what the Pi runs, the units it would touch, the Pi unchanged', async () => {
    const run = await runAction(deployInputs(pr, { mode: 'dry-activate' }))
    expect(run.exitCode).toBe(0)
    expect(run.outputs).toMatchObject({
      result: 'dry-activated',
      'store-path': gen2,
      'previous-store-path': gen0,
      changed: 'true',
      generation: ''
    })
    expect(Number(run.outputs['copied-bytes'])).toBeGreaterThan(0)
    expect(run.summary.split('\n')[0]).toBe('### nix-deploy-action: ✅ Dry-activated')
    // Verdict, then the table with every phase, then the diff, then the units.
    for (const phase of ['inputs', 'build', 'connect', 'copy', 'activate', 'verify'])
      expect(run.summary).toMatch(new RegExp(`\\| ${phase} \\| [0-9.]+ s \\|`))
    expect(run.summary).toContain(
      `#### Changes against what target <code>root@${testbed().TESTBED_PI}</code> runs`
    )
    // The system's own change, once, in short form (name, then the first 8 characters of the hash).
    const short = (p: string): string => `${p.slice(44)} (${p.slice(11, 19)})`
    expect(run.summary).toContain(`System: <code>${short(gen0)}</code> → <code>${short(gen2)}</code>`)
    expectPackageDiff(run.summary)
    expect(run.summary).toContain('| start | fixture-gen2.service |')
    expect(run.summary.indexOf('#### Changes against')).toBeLessThan(
      run.summary.indexOf('#### Units dry-activate reports')
    )
    expect(piState()).toMatchObject(installedState(gen0))
  }, 300_000)

  it('after merge, the deploy finds the PR system already on the Pi and copies nothing', async () => {
    expect((await runAction(deployInputs(pr, { mode: 'dry-activate' }))).outputs.result).toBe('dry-activated')
    const run = await runAction(deployInputs(pr, { mode: 'switch' }))
    expect(run.exitCode).toBe(0)
    expect(run.outputs).toMatchObject({ result: 'deployed', 'copied-bytes': '0', generation: '2' })
    expect(piState()).toMatchObject({ current: gen2, profile: gen2, bootDefault: gen2 })
  }, 300_000)

  it("a fork's run of the dry-activate job (secrets and variables empty) builds only, with a warning", async () => {
    const run = await runAction(
      deployInputs('pi-gen1', {
        mode: 'dry-activate',
        'target-host': '',
        'jump-host': '',
        'ssh-private-key': '',
        'known-hosts': ''
      })
    )
    expect(run.exitCode).toBe(0)
    expect(run.outputs.result).toBe('built')
    expect(warnings(run.log)).toHaveLength(1)
    expect(warnings(run.log)[0]).toMatch(/dry-activate ran as a build only: .*ssh-private-key/)
    expect(run.summary.split('\n')[0]).toBe('### nix-deploy-action: ✅ Built (not deployed)')
    expect(run.summary).toMatch(/> \[!WARNING\]\n> dry-activate ran as a build only/)
    expect(piState()).toMatchObject(installedState(gen0))
  }, 300_000)
})

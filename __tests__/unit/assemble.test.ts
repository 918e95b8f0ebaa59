import * as os from 'os'
import { reportBuild, reportFleet } from '../../src/report/assemble'
import { publishReport } from '../../src/report/publish'
import { ClosureDiff } from '../../src/report/diff'
import { BuildFacts, DeployReport, MachineBuildFacts } from '../../src/report/report'
import { interceptStdout } from './stdout'

const top = (c: string): string => `/nix/store/${c.repeat(32)}-nixos-system`

function machine(name: string, extra: Partial<MachineBuildFacts> = {}): MachineBuildFacts {
  return {
    name,
    storePath: top(name[name.length - 1] ?? 'a'),
    platform: 'aarch64-linux',
    requestedMode: 'switch',
    mode: 'switch',
    host: `root@${name || 'pi'}:22`,
    closureSize: 1000,
    closurePaths: 10,
    warnings: [],
    ...extra
  }
}

function facts(machines: MachineBuildFacts[], extra: Partial<BuildFacts> = {}): BuildFacts {
  return {
    source: '.#pi',
    requestedMode: 'switch',
    mode: 'switch',
    warnings: [],
    machines,
    builtDerivations: 2,
    binfmt: 'QEMU binfmt',
    ...extra
  }
}

const empty = (): DeployReport => ({ timings: [{ phase: 'build', ms: 500 }], warnings: [] })

describe('reportBuild: the report made of what the build found', () => {
  it("one machine: the run's report is the machine's, with the run's and the machine's warnings", () => {
    const report = empty()
    const reports = reportBuild(
      report,
      facts([machine('', { warnings: ['its own'] })], { warnings: ['the run'] })
    )
    expect(reports).toHaveLength(1)
    expect(reports[0]).toBe(report)
    expect(report).toMatchObject({
      flake: '.#pi',
      mode: 'switch',
      storePath: top('a'),
      closureSize: 1000,
      builtDerivations: 2,
      binfmt: 'QEMU binfmt',
      warnings: ['its own', 'the run']
    })
    expect(report.hosts).toBeUndefined()
    expect(report.result).toBeUndefined()
  })
  it("a build-only run is 'built' once its closure is listed, with the diff against diff-against", () => {
    const report = empty()
    const diff: ClosureDiff = {
      added: [{ pname: 'hello', versions: ['2.12'] }],
      removed: [],
      changed: [],
      pathsBefore: 1,
      pathsAfter: 2,
      otherPathsChanged: 0,
      otherPaths: []
    }
    reportBuild(
      report,
      facts([machine('', { mode: 'build', requestedMode: 'build', host: undefined })], {
        mode: 'build',
        requestedMode: 'build',
        diff: { diff, baseline: '/nix/store/x', needsReboot: true }
      })
    )
    expect(report).toMatchObject({ result: 'built', diff, diffBaseline: '/nix/store/x', needsReboot: true })
    const unfinished = empty()
    reportBuild(
      unfinished,
      facts([machine('', { mode: 'build', closureSize: undefined })], { mode: 'build' })
    )
    expect(unfinished.result).toBeUndefined()
  })
  it("several machines: one report each under hosts, each with the build's time; the fleet's result the worst", () => {
    const report = empty()
    const reports = reportBuild(report, facts([machine('pi1'), machine('pi2', { tags: ['lab'] })]))
    expect(report.hosts?.map(h => h.machine)).toEqual(['pi1', 'pi2'])
    // The very reports the fleet then fills.
    expect(report.hosts?.[0].report).toBe(reports[0])
    expect(report.hosts?.[1].report).toBe(reports[1])
    expect(reports[1]).toMatchObject({
      machine: 'pi2',
      tags: ['lab'],
      host: 'root@pi2:22',
      builtDerivations: 2
    })
    expect(reports.map(r => r.timings)).toEqual([
      [{ phase: 'build', ms: 500 }],
      [{ phase: 'build', ms: 500 }]
    ])
    reports[0].result = 'deployed'
    reports[1].result = 'failed'
    reportFleet(report, reports)
    expect(report.result).toBe('failed')
  })
  it("several machines not all built (the build failed, or the run's timeout passed): one report, the run's, with every warning", () => {
    const report = empty()
    const reports = reportBuild(
      report,
      facts(
        [
          machine('pi1', { warnings: ['pi1: deployment.ec2 is ignored'] }),
          machine('pi2', { closureSize: undefined, warnings: ['health-checks are not run in mode boot'] })
        ],
        { warnings: ['no cache service'] }
      )
    )
    expect(reports).toEqual([])
    expect(report.hosts).toBeUndefined()
    expect(report.warnings).toEqual([
      'no cache service',
      'pi1: deployment.ec2 is ignored',
      'pi2: health-checks are not run in mode boot'
    ])
  })
  it('a build-only run that failed after its closure was listed stays failed', () => {
    const report: DeployReport = {
      ...empty(),
      result: 'failed',
      error: { message: 'm', hint: 'h', phase: 'report' }
    }
    reportBuild(report, facts([machine('', { mode: 'build' })], { mode: 'build' }))
    expect(report.result).toBe('failed')
  })
  it('a build that failed before evaluating reports the run and its warnings, and no machine', () => {
    const report = empty()
    expect(reportBuild(report, facts([], { warnings: ['no cache service'] }))).toEqual([])
    expect(report).toMatchObject({ flake: '.#pi', warnings: ['no cache service'] })
    expect(report.hosts).toBeUndefined()
  })
})

/**
 * What publishReport writes to stdout (workflow commands; GITHUB_OUTPUT unset: outputs there too,
 * or `outputFile`), and the exit code it leaves.
 */
async function publishedWithCode(
  report: DeployReport,
  outputFile?: string
): Promise<[string[], number | undefined]> {
  const saved = { output: process.env.GITHUB_OUTPUT, summary: process.env.GITHUB_STEP_SUMMARY }
  if (outputFile) process.env.GITHUB_OUTPUT = outputFile
  else delete process.env.GITHUB_OUTPUT
  delete process.env.GITHUB_STEP_SUMMARY
  let code: number | undefined
  const stdout = interceptStdout()
  try {
    await publishReport(report)
  } finally {
    stdout.restore()
    if (saved.output !== undefined) process.env.GITHUB_OUTPUT = saved.output
    else delete process.env.GITHUB_OUTPUT
    if (saved.summary !== undefined) process.env.GITHUB_STEP_SUMMARY = saved.summary
    code = process.exitCode === undefined ? undefined : Number(process.exitCode)
    process.exitCode = undefined
  }
  return [
    stdout
      .text()
      .split('\n')
      .filter(l => /^::(warning|error)/.test(l)),
    code
  ]
}

async function published(report: DeployReport): Promise<string[]> {
  return (await publishedWithCode(report))[0]
}

describe('publishReport: every annotation, written once, at the end', () => {
  it("annotates the run's warnings and failure, and fails the step", async () => {
    const lines = await published({
      result: 'failed',
      timings: [],
      warnings: ['w1'],
      error: { message: 'boom', hint: 'fix it', phase: 'copy' }
    })
    expect(lines).toEqual([
      '::warning::w1',
      '::error title=nix-deploy-action%3A copy failed::boom%0Afix it',
      '::error::boom'
    ])
  })
  it('names each machine of several: its warnings, its failure, a rollback-fleet; the step fails with the count', async () => {
    const host = (r: Partial<DeployReport>): DeployReport => ({ timings: [], warnings: [], ...r })
    const lines = await published({
      timings: [],
      warnings: [],
      hosts: [
        { machine: 'pi1', report: host({ result: 'deployed', warnings: ['pi1: already named', 'not yet'] }) },
        {
          machine: 'pi2',
          report: host({
            result: 'failed',
            error: { message: 'no route', hint: 'check it', phase: 'connect' }
          })
        },
        {
          machine: 'pi3',
          report: host({ result: 'rolled-back', rolledBackTo: '/nix/store/old', fleetRollback: 'pi2 failed' })
        }
      ]
    })
    expect(lines).toEqual([
      '::warning::pi1: already named',
      '::warning::pi1: not yet',
      '::error title=nix-deploy-action%3A pi2%3A connect failed::pi2: no route%0Acheck it',
      '::warning title=nix-deploy-action%3A pi3%3A rolled back::pi3: rolled back to /nix/store/old (rollback-fleet): pi2 failed',
      '::error::1 of 3 machines failed; 1 rolled back by rollback-fleet'
    ])
  })
  it('fails the step even when its outputs cannot be written', async () => {
    const [lines, code] = await publishedWithCode(
      { result: 'deployed', timings: [], warnings: [] },
      os.tmpdir()
    )
    expect(code).toBe(1)
    expect(lines).toEqual([expect.stringMatching(/^::error::could not write the step's outputs: /)])
    const [, ok] = await publishedWithCode({ result: 'deployed', timings: [], warnings: [] })
    expect(ok).toBeUndefined()
  })
})

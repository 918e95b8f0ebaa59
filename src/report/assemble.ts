import { BuildFacts, DeployReport, MachineBuildFacts, PhaseTiming, worstReport } from './report'

/**
 * The report takes in what the build found: the run's facts, then one report per machine (the
 * run's own when there is one; else, once every machine is built, each machine's under `hosts`,
 * with the build's time). The reports returned are the ones the deploys then fill
 * (applyMachineResult). Also called for a build that failed part-way or ran out of time: what it
 * got to is reported, in the run's report.
 */
export function reportBuild(report: DeployReport, facts: BuildFacts): DeployReport[] {
  Object.assign(report, {
    flake: facts.source,
    requestedMode: facts.requestedMode,
    mode: facts.mode,
    host: facts.host,
    cache: facts.cache,
    binfmt: facts.binfmt,
    builtDerivations: facts.builtDerivations,
    published: facts.published
  })
  if (facts.machines.length === 1) {
    const [m] = facts.machines
    // Its own warnings (its plan's first) before the build's.
    fillMachine(report, m, facts)
    report.warnings.push(...facts.warnings)
    if (facts.diff)
      Object.assign(report, {
        diff: facts.diff.diff,
        diffBaseline: facts.diff.baseline,
        needsReboot: facts.diff.needsReboot
      })
    // A build-only run that listed its closure is done, unless it failed after that.
    if (m.mode === 'build' && m.closureSize !== undefined && !report.error) report.result = 'built'
    return [report]
  }
  report.warnings.push(...facts.warnings)
  // mode report lists no closure: it only reads what each machine runs.
  if (facts.machines.some(m => m.closureSize === undefined && m.mode !== 'report')) {
    // Not every machine was built: the run failed as one, and its report says so; each machine's
    // warnings go with it, named.
    for (const m of facts.machines)
      report.warnings.push(...m.warnings.map(w => (w.startsWith(`${m.name}: `) ? w : `${m.name}: ${w}`)))
    return []
  }
  const buildTiming = report.timings.find(t => t.phase === 'build')
  const hosts = facts.machines.map(m => {
    const timings: PhaseTiming[] = buildTiming ? [{ ...buildTiming }] : []
    const host: DeployReport = { timings, warnings: [], flake: facts.source }
    fillMachine(host, m, facts)
    return { machine: m.name, report: host }
  })
  if (hosts.length > 0) report.hosts = hosts
  return hosts.map(h => h.report)
}

function fillMachine(report: DeployReport, m: MachineBuildFacts, run: BuildFacts): void {
  Object.assign(report, {
    requestedMode: m.requestedMode,
    mode: m.mode,
    host: m.host,
    machine: m.name || undefined,
    tags: m.tags,
    storePath: m.storePath,
    platform: m.platform,
    closureSize: m.closureSize,
    closurePaths: m.closurePaths,
    builtDerivations: run.builtDerivations,
    cache: run.cache,
    binfmt: run.binfmt
  })
  report.warnings.push(...m.warnings)
}

/** A fleet's result for the run: the worst of its machines' (with one machine, its report is the run's). */
export function reportFleet(report: DeployReport, machines: DeployReport[]): void {
  if (machines.length > 1) report.result = worstReport(machines).result
}

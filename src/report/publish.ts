import * as core from '@actions/core'
import { errorMessage } from '../errors'
import { scrubSecrets } from '../secrets'
import { DeployReport, fleetCounts, fleetRollbackWhy, outputsOf } from './report'
import { escapeMarkdown, renderSummary } from './summary'

/**
 * The one writer of what a run leaves behind: its annotations (every warning and failure the
 * phases recorded), its outputs, its job summary and the step's failure, all from the finished
 * report. The runner masks secrets in the log only: outputs and the summary are scrubbed here.
 */
export async function publishReport(report: DeployReport): Promise<void> {
  // Millisecond phase times for `npm run bench` (the summary rounds to 0.1 s); RUNNER_DEBUG only.
  core.debug(`phase timings (ms): ${JSON.stringify(report.timings)}`)
  // The step fails whatever else fails here (an outputs file that cannot be written).
  let failed = stepFailure(report)
  try {
    annotate(report)
    for (const [k, v] of Object.entries(outputsOf(report))) core.setOutput(k, scrubSecrets(v))
  } catch (e) {
    // Later steps would read outputs that are not there: the step says so by failing.
    failed ??= `could not write the step's outputs: ${errorMessage(e)}`
  }
  try {
    await core.summary.addRaw(scrubSecrets(renderSummary(report))).write()
  } catch (e) {
    // No GITHUB_STEP_SUMMARY (e.g. a local run): the log has everything.
    core.debug(`no job summary: ${errorMessage(e)}`)
  } finally {
    if (failed) core.setFailed(failed)
  }
}

/** The run's warnings and failure, then each machine's (named) when several were deployed. */
function annotate(report: DeployReport): void {
  for (const w of report.warnings) core.warning(w)
  for (const { machine, report: m } of report.hosts ?? []) {
    const who = `${machine}: `
    for (const w of m.warnings) core.warning(w.startsWith(who) ? w : `${who}${w}`)
    const putBack = fleetRollbackWhy(m)
    if (putBack)
      core.warning(`${who}rolled back to ${m.rolledBackTo ?? 'what it ran'} (rollback-fleet): ${putBack}`, {
        title: `nix-deploy-action: ${who}rolled back`
      })
    if (m.error) annotateError(m.error, who)
  }
  if (report.error) annotateError(report.error, '')
}

function annotateError(error: NonNullable<DeployReport['error']>, who: string): void {
  core.error(`${who}${error.message}\n${error.hint}`, {
    title: `nix-deploy-action: ${who}${error.phase} failed`
  })
}

/** Why the step failed: the run's own failure, or the machines of several that failed. */
function stepFailure(report: DeployReport): string | undefined {
  if (report.error) return report.error.message
  const hosts = report.hosts ?? []
  const counts = fleetCounts(hosts.map(h => h.report))
  if (counts.failed + counts.reverted === 0) return undefined
  return `${counts.failed} of ${hosts.length} machines failed${counts.reverted > 0 ? `; ${counts.reverted} rolled back by rollback-fleet` : ''}`
}

/** What the post step leaves: its warnings, and its lines for the job summary (the cache's save). */
export interface PostReport {
  warnings: string[]
  summary: string[]
}

/** The post step's annotations and summary lines; the post step never fails the job. */
export async function publishPostReport(report: PostReport): Promise<void> {
  for (const w of report.warnings) core.warning(w)
  if (report.summary.length === 0) return
  await core.summary
    .addRaw(report.summary.map(l => `\n${escapeMarkdown(l)}\n`).join(''))
    .write()
    .catch(() => undefined)
}

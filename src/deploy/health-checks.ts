/**
 * The health checks (the `health-checks` input) run on the target after activating, before the
 * confirmation (src/deploy/activate.ts decides with their result).
 */
import { errorMessage } from '../errors'
import { Target } from '../target/target'

/** Runs every check on the target until all pass at once or health-timeout passes. */
export async function runHealthChecks(
  target: Target,
  checks: string[],
  timeoutSeconds: number
): Promise<{ ok: boolean; report: string }> {
  const deadline = Date.now() + timeoutSeconds * 1000
  for (let attempt = 1; ; attempt++) {
    const failure = await firstFailingCheck(target, checks, deadline, attempt)
    if (!failure) {
      target.log.info(`Health checks passed (attempt ${attempt})`)
      return { ok: true, report: `health checks passed on attempt ${attempt}: ${checks.join('; ')}` }
    }
    if (Date.now() + 2000 >= deadline) {
      target.log.warning(failure)
      return { ok: false, report: failure }
    }
    target.log.info(`${failure.split('\n')[0]}; retrying`)
    await new Promise(res => setTimeout(res, 2000))
  }
}

/** Runs the checks in order; what the first failing one said, or undefined when all passed. */
async function firstFailingCheck(
  target: Target,
  checks: string[],
  deadline: number,
  attempt: number
): Promise<string | undefined> {
  for (const check of checks) {
    const remaining = Math.max(1000, deadline - Date.now())
    try {
      const r = await target.runHealthCheck(check, deadline, Math.min(remaining, 30_000))
      if (r.exitCode !== 0)
        return `health check failed (attempt ${attempt}, exit ${r.exitCode}): ${check}\n${r.output.trim().slice(-2000)}`
    } catch (e) {
      return `health check could not run (attempt ${attempt}): ${check}\n${errorMessage(e)}`
    }
  }
  return undefined
}

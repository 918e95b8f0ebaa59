import { ActionError } from '../errors'
import { DeployReport } from './report'
import { printUntrusted } from '../log/untrusted'

/**
 * Records a failure in a report (src/report/publish.ts turns it into the annotation, the summary
 * and the step's failure). Anything but an ActionError is a bug, recorded with its stack. The
 * failure's details (build or activation output: untrusted) are printed now, where they happened.
 */
export function reportFailure(report: DeployReport, e: unknown, machine = ''): void {
  const err =
    e instanceof ActionError
      ? e
      : new ActionError(
          `unexpected error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`,
          'This is a bug in nix-deploy-action; please report it with the log.',
          'report'
        )
  if (report.result !== 'rolled-back') report.result = 'failed'
  report.error = { message: err.message, hint: err.hint, phase: err.phase, details: err.details }
  // Details hold build and activation output (untrusted): shown, never obeyed.
  if (err.details) printUntrusted(err.details, machine ? `[${machine}] ` : '')
}

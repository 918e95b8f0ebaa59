import * as core from '@actions/core'
import { ActionError } from '../errors'
import { DeployReport } from './report'
import { printUntrusted } from '../log/untrusted'

/**
 * Reports a failure as an annotation and in the summary; for the whole run (no machine) also as the
 * step's failure. Anything but an ActionError is a bug, reported with its stack.
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
  const who = machine ? `${machine}: ` : ''
  core.error(`${who}${err.message}\n${err.hint}`, { title: `nix-deploy-action: ${who}${err.phase} failed` })
  if (!machine) core.setFailed(err.message)
}

import * as core from '@actions/core'

/**
 * Masks a secret in everything the runner shows. A multi-line secret is masked line by line too:
 * the runner matches masks per line of output, so one mask for the whole value would not hide a
 * line of it printed alone. (Very short lines are left: masking "}" would garble the whole log.)
 */
export function maskSecret(value: string): void {
  core.setSecret(value)
  for (const line of value.split(/\r?\n/)) if (line.trim().length >= 4) core.setSecret(line.trim())
}

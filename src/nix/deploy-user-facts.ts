/**
 * What a deploy user's gate (nixos/deploy-user.nix) checks of a new system, read from the system
 * where it was built: a deploy plan carries it to the shard jobs, which have no system to read.
 */
import { promises as fs } from 'fs'
import * as path from 'path'

/** services.nix-deploy-action.deployUser as a system has it (its etc/nix-deploy-action). */
export interface DeployUserFacts {
  /** The module is in it (etc/nix-deploy-action/deploy-user): nda-root activates no system without it. */
  enabled: boolean
  /** The health checks the gate runs once it is the running system (etc/nix-deploy-action/health-checks). */
  healthChecks: string[]
}

/** The facts of the system `toplevel` in the runner's store. */
export async function readDeployUserFacts(toplevel: string): Promise<DeployUserFacts> {
  const etc = path.join(toplevel, 'etc', 'nix-deploy-action')
  const read = (name: string): Promise<string | undefined> =>
    fs.readFile(path.join(etc, name), 'utf8').catch(() => undefined)
  const [marker, checks] = await Promise.all([read('deploy-user'), read('health-checks')])
  return { enabled: marker !== undefined, healthChecks: parseHealthChecks(checks ?? '') }
}

/** The health-checks file: one check per line, exactly as the health-checks input writes it. */
function parseHealthChecks(text: string): string[] {
  return text.split('\n').filter(c => c !== '')
}

/** Why `value` (from a deploy plan) is not DeployUserFacts, or undefined when it is. */
export function deployUserFactsProblem(value: unknown): string | undefined {
  const v = value as Partial<DeployUserFacts> | null
  if (typeof v !== 'object' || v === null) return 'is not an object'
  if (typeof v.enabled !== 'boolean') return 'has no enabled (true or false)'
  if (
    !Array.isArray(v.healthChecks) ||
    !v.healthChecks.every(c => typeof c === 'string' && !c.includes('\n'))
  )
    return 'has no list of health checks (one line each)'
  return undefined
}

import { Target } from '../target/target'
import { generationsToDelete } from './generations'

/** Deletes system generations beyond the newest `keep`, never the running, booted or current one. */
export async function pruneGenerations(
  target: Target,
  keep: number,
  profileGeneration: number | undefined
): Promise<number[]> {
  const listing = await target.systemProfile.listGenerations()
  const doomed = generationsToDelete(listing.generations, keep, {
    profileGeneration,
    runningPath: listing.running,
    bootedPath: listing.booted
  })
  if (doomed.length === 0) return []
  const refused = await target.systemProfile.deleteGenerations(doomed)
  if (refused !== undefined) {
    target.log.warning(`could not delete old generations ${doomed.join(', ')}: ${refused}`)
    return []
  }
  target.log.info(`Deleted old system generations ${doomed.join(', ')} (keep-generations: ${keep})`)
  return doomed
}

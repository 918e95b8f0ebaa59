/** System profile generation retention (keep-generations). Pure: the choice is separate from the I/O. */
import { GenerationInfo } from '../target/target'

/**
 * The generations to delete so that the newest `keep` remain, and the current profile generation, and
 * for the running and the booted system (after an earlier `test` or `boot` deploy they may be older)
 * the newest generation that holds each -- so they stay rollback targets and safe from the GC.
 */
export function generationsToDelete(
  all: GenerationInfo[],
  keep: number,
  protect: { profileGeneration?: number; runningPath?: string; bootedPath?: string }
): number[] {
  const newestFirst = [...all].sort((a, b) => b.number - a.number)
  const kept = new Set(newestFirst.slice(0, keep).map(g => g.number))
  if (protect.profileGeneration !== undefined) kept.add(protect.profileGeneration)
  for (const p of [protect.runningPath, protect.bootedPath]) {
    if (!p || newestFirst.some(g => kept.has(g.number) && g.path === p)) continue
    const holder = newestFirst.find(g => g.path === p)
    if (holder) kept.add(holder.number)
  }
  return all.filter(g => !kept.has(g.number)).map(g => g.number)
}

/**
 * What each mode means for a deploy, in one place (as colmena's goal.rs): whether it sets the
 * system profile, changes what runs, takes the deploy lock, when the target counts as already
 * there, and what "changed" means afterwards.
 */
import { RemoteState } from '../target/remote-state'
import { UnchangedWhen } from '../target/target'

/** The modes that reach a target (`build` never does). */
export type DeployMode = 'switch' | 'boot' | 'test' | 'dry-activate'

export interface Goal {
  mode: DeployMode
  /** switch, boot: the system profile gets the new generation. */
  setsProfile: boolean
  /** switch, test: what runs now changes. */
  changesRunningSystem: boolean
  /** Every mode that changes the target holds its deploy lock. */
  locks: boolean
  /** When the target already has the system (nothing to do). */
  unchangedWhen: UnchangedWhen
  /** Dry runs upload no deployment.keys. */
  uploadsKeys: boolean
}

export function goalOf(mode: DeployMode): Goal {
  const changesTarget = mode !== 'dry-activate'
  return {
    mode,
    setsProfile: mode === 'switch' || mode === 'boot',
    changesRunningSystem: mode === 'switch' || mode === 'test',
    locks: changesTarget,
    unchangedWhen: changesTarget ? mode : 'never',
    uploadsKeys: changesTarget
  }
}

/** Whether the deploy changed the target (the `changed` output). */
export function changedBy(goal: Goal, before: RemoteState, after: RemoteState, toplevel: string): boolean {
  if (goal.mode === 'boot') return after.profile !== before.profile
  if (goal.mode === 'dry-activate') return before.current !== toplevel
  return after.current !== before.current
}

/** What the verify step requires of the target afterwards; the problems found. */
export function verifyProblems(goal: Goal, after: RemoteState, toplevel: string): string[] {
  const problems: string[] = []
  if (goal.changesRunningSystem && after.current !== toplevel)
    problems.push(`it runs ${after.current ?? 'nothing'}`)
  if (goal.setsProfile && after.profile !== toplevel)
    problems.push(`its system profile is ${after.profile ?? 'missing'}`)
  return problems
}

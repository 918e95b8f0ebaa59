/**
 * What each mode means, in one place (as colmena's goal.rs): whether it reaches a target, sets the
 * system profile, changes what runs, takes the deploy lock, when the target counts as already
 * there, and what "changed" means afterwards. The inputs' cross-checks (src/inputs.ts) and the plan
 * (src/plan.ts) ask these predicates; neither spells a mode's meaning itself.
 */
import type { Mode } from '../modes'
import { RemoteState } from '../target/remote-state'
import { UnchangedWhen } from '../target/target'

/** The modes that deploy to a target (`build` never connects; `report` only looks). */
export type DeployMode = Exclude<Mode, 'build' | 'report'>

/** A mode's meaning; plain `Goal` is a deploy's (the code below the plan deals with those only). */
export interface Goal<M extends Mode = DeployMode> {
  mode: M
  /** Every mode but build connects to a target. */
  connects: boolean
  /**
   * dry-activate only: without what it needs to connect (a fork's pull request gets no secrets) it
   * runs as a build, with a warning, instead of failing.
   */
  buildsWithoutSecrets: boolean
  /** switch, boot: the system profile gets the new generation (so a reboot can boot it). */
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

export function goalOf<M extends Mode>(mode: M): Goal<M> {
  const connects = mode !== 'build'
  const changesTarget = connects && mode !== 'dry-activate' && mode !== 'report'
  return {
    mode,
    connects,
    buildsWithoutSecrets: mode === 'dry-activate',
    setsProfile: mode === 'switch' || mode === 'boot',
    changesRunningSystem: mode === 'switch' || mode === 'test',
    locks: changesTarget,
    unchangedWhen: changesTarget ? (mode as UnchangedWhen) : 'never',
    uploadsKeys: changesTarget
  }
}

/**
 * Whether the new system runs after the deploy: switch and test, and a reboot into the profile
 * (mode boot with reboot on), which puts its boot on trial and runs its health checks after it.
 */
export function runsNewSystem(goal: Goal<Mode>, reboots: boolean): boolean {
  return goal.changesRunningSystem || (goal.setsProfile && reboots)
}

/** A reboot boots the system profile: only a mode that sets it can ask for one. */
export function canReboot(goal: Goal<Mode>): boolean {
  return goal.setsProfile
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

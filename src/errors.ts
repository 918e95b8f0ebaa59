/** The phases a deploy goes through, in order. Errors and timings are attributed to one of them. */
export type Phase = 'inputs' | 'plan' | 'build' | 'connect' | 'copy' | 'activate' | 'verify' | 'report'

/**
 * A failure the user can act on: `message` says what is wrong, `hint` what to do about it.
 * Everything thrown on purpose by the action is an ActionError; anything else is a bug and is
 * reported as such with its stack.
 */
export class ActionError extends Error {
  constructor(
    message: string,
    readonly hint: string,
    readonly phase: Phase,
    /** Extra text shown in the summary (e.g. the tail of a build log); may be long. */
    readonly details?: string
  ) {
    super(message)
    this.name = 'ActionError'
  }
}

/** Several invalid inputs at once: reported together so one run shows every problem. */
export class InputError extends ActionError {
  constructor(readonly problems: string[]) {
    super(
      problems.length === 1
        ? problems[0]
        : `${problems.length} inputs are invalid:\n- ${problems.join('\n- ')}`,
      'Fix the inputs in the workflow step (`with:`); docs/inputs.md lists every input and its allowed values.',
      'inputs'
    )
  }
}

/**
 * Another run holds the deploy lock this run held before its reboot (it took over the boot trial
 * this run waits on, as lock.sh lets a run of the same system do): what it decides is that run's.
 */
export class LockTakenError extends ActionError {}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e)
}

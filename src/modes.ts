/** The action's modes (the `mode` input); what each means for a deploy is deploy/goal.ts. */
export const MODES = ['switch', 'boot', 'test', 'dry-activate', 'build', 'report'] as const
export type Mode = (typeof MODES)[number]

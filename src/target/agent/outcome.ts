/**
 * What the activation agent on the target (src/target/scripts/agent.sh, followed through follow.sh)
 * answers, and the parser of those answers: the target's half of the agent protocol as the runner
 * reads it. Pure.
 */

/**
 * The agent's final outcomes (the words after `finish` in agent.sh): what the action reads from
 * DIR/outcome. A unit test checks this list against the script.
 */
export const AGENT_OUTCOMES = [
  'done',
  'confirmed',
  'unconfirmed-kept',
  'rolled-back',
  'rolled-back-unconfirmed',
  'boot-entry-failed',
  'failed',
  'profile-failed',
  'rollback-failed'
] as const
export type AgentOutcome = (typeof AGENT_OUTCOMES)[number]

/** Whether the agent runs: 'dead' (killed) or 'gone' (its directory too: a reboot) without an outcome is final. */
export const AGENT_LIVENESS = ['alive', 'starting', 'dead', 'gone'] as const

export interface AgentState {
  status?: number
  generation?: number
  outcome?: AgentOutcome | string
  agent?: (typeof AGENT_LIVENESS)[number]
  /** Whether the generation it made was a new one (not one nix-env reused). */
  createdNew?: boolean
}

/** Parses follow.sh's stderr (key=value lines). */
export function parseAgentState(stderr: string): AgentState & { size: number } {
  const kv = new Map<string, string>()
  for (const l of stderr.split('\n')) {
    const m = /^(size|status|generation|outcome|agent|created-new)=(.*)$/.exec(l.trim())
    if (m) kv.set(m[1], m[2].trim())
  }
  const num = (k: string): number | undefined => {
    const v = kv.get(k)
    return v && /^[0-9]+$/.test(v) ? Number(v) : undefined
  }
  const outcome = kv.get('outcome')
  return {
    size: num('size') ?? 0,
    status: num('status'),
    generation: num('generation'),
    outcome: outcome || undefined,
    agent: AGENT_LIVENESS.find(a => a === kv.get('agent')),
    createdNew: kv.get('created-new') === '1' ? true : kv.get('created-new') === '0' ? false : undefined
  }
}

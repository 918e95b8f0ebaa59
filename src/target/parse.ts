/** Readers of what the target's scripts print, and the agent's command line. Pure. */
import { generationOf, RemoteState } from './remote-state'
import { AGENT_LIVENESS, AgentRequest, AgentState, GenerationListing } from './target'

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

/** Parses list-generations.sh: "system-12-link /nix/store/…" lines, then what runs and boots. */
export function parseGenerations(text: string): GenerationListing {
  const generations = text
    .split('\n')
    .map(l => /^system-([0-9]+)-link (\/nix\/store\/\S+)$/.exec(l.trim()))
    .filter((m): m is RegExpExecArray => m !== null)
    .map(m => ({ number: Number(m[1]), path: m[2] }))
    .sort((a, b) => a.number - b.number)
  return {
    generations,
    running: /^running (\S+)$/m.exec(text)?.[1],
    booted: /^booted (\S+)$/m.exec(text)?.[1]
  }
}

/** The paths of `asked` listed (one per line) in a script's answer. */
export function parseMissing(stdout: string, asked: Set<string>): Set<string> {
  return new Set(
    stdout
      .split('\n')
      .map(l => l.trim())
      .filter(l => l !== '' && asked.has(l))
  )
}

/** agent.sh's command line (after the script): named options, so their order cannot be mixed up. */
export function agentCommandOptions(r: AgentRequest): string[] {
  const opt = (name: string, value: string | number | undefined): string[] =>
    value === undefined || value === '' ? [] : [`--${name}`, String(value)]
  const before: RemoteState = r.before
  return [
    ...opt('dir', r.dir),
    ...opt('toplevel', r.toplevel),
    ...opt('action', r.action),
    ...opt('activation-timeout', r.activationTimeoutSeconds),
    ...opt('wait-seconds', r.waitSeconds),
    ...opt('on-timeout', r.onTimeout),
    ...opt('prev-current', before.current),
    ...opt('prev-profile', before.profile),
    ...opt('prev-generation', generationOf(before.profileLink)),
    ...opt('lock-dir', r.lock?.dir),
    ...opt('lock-id', r.lock?.id),
    ...opt('lease', r.lock?.leaseSeconds),
    ...(r.rollbackOf
      ? [
          '--rollback-of-generation',
          r.rollbackOf.generation === undefined ? '-' : String(r.rollbackOf.generation),
          '--rollback-created-new',
          r.rollbackOf.createdNew ? '1' : '0',
          '--rollback-of-dir',
          r.rollbackOf.dir
        ]
      : [])
  ]
}

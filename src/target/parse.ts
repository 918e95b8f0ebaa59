/** Readers of what the target's scripts print (the agent's: ./agent/outcome.ts). Pure. */
import { GenerationListing } from './target'

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

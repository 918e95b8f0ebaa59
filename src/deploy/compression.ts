import { existsSync } from 'fs'
import * as path from 'path'

/**
 * Compression of the store path stream sent to the target. zstd in adaptive mode (levels 1 to 6,
 * -T0) picks its level from how fast the link drains its output: high on a slow uplink, low on a
 * fast LAN where compressing harder would cost more than it saves. It compresses a NixOS closure
 * about 3:1 and decompresses fast even on a Pi, so from 10 Mbit/s up to an unthrottled local link it
 * beats sending raw (nix-copy-closure) and gzip (nix-copy-closure --gzip); see bench/RESULTS.md.
 * gzip is the fallback (every NixOS has it), xz only when asked for (slow to compress).
 */
export const COMPRESSIONS = ['auto', 'zstd', 'xz', 'gzip', 'none'] as const
export type CompressionSetting = (typeof COMPRESSIONS)[number]

export interface Codec {
  name: 'zstd' | 'xz' | 'gzip' | 'none'
  /** Runner-side compressor argv (reads stdin, writes stdout); empty for none. */
  compress: string[]
}

export const CODECS: Record<Codec['name'], Codec> = {
  zstd: { name: 'zstd', compress: ['zstd', '--adapt=min=1,max=6', '-T0', '-q', '-c'] },
  xz: { name: 'xz', compress: ['xz', '-2', '-T0', '-q', '-c'] },
  gzip: { name: 'gzip', compress: ['gzip', '-3', '-c'] },
  none: { name: 'none', compress: [] }
}

/** The codec to use: the setting if both sides can, else the best both sides have (auto). */
export function chooseCodec(
  setting: CompressionSetting,
  runnerHas: (tool: string) => boolean,
  targetHas: Set<string>
): { codec: Codec; note?: string } {
  const both = (name: string): boolean => runnerHas(name) && targetHas.has(name)
  if (setting !== 'auto') {
    if (setting === 'none' || both(setting)) return { codec: CODECS[setting] }
    const fallback = chooseCodec('auto', runnerHas, targetHas).codec
    return {
      codec: fallback,
      note: `compression ${setting} is not available on ${runnerHas(setting) ? 'the target' : 'the runner'}; using ${fallback.name}`
    }
  }
  for (const name of ['zstd', 'gzip'] as const) if (both(name)) return { codec: CODECS[name] }
  return { codec: CODECS.none }
}

/** Whether an executable is on the runner's PATH. */
export function onPath(tool: string, envPath: string = process.env.PATH ?? ''): boolean {
  return envPath.split(':').some(dir => dir !== '' && existsSync(path.join(dir, tool)))
}

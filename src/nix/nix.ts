import * as core from '@actions/core'
import { ActionError } from '../errors'
import { runCommand, tail } from '../run-command'
import { PathInfo, parsePathInfoJson } from './closure'
import { FlakeTarget } from './flake'
import { assertStorePath } from './store-path'

export interface Evaluation {
  drvPath: string
  outPath: string
  /** The platform the toplevel derivation is built on (`toplevel.system`). */
  buildSystem: string
  /** The platform the configuration runs on (nixpkgs.hostPlatform), i.e. the Pi's. */
  hostSystem: string
}

export interface BuildResult {
  /** Derivations Nix built in this run (0 when everything was already in the store). */
  built: string[]
}

// Applied to nixosConfigurations.<name>. (The result must not have an attribute named outPath: Nix
// would print such a set as that one string.) nixpkgs.hostPlatform throws when unset on recent nixpkgs,
// hence tryEval; older configurations fall back to pkgs.stdenv, then to the toplevel's own system.
const EVAL_APPLY = `c: let
  t = c.config.system.build.toplevel;
  h = builtins.tryEval (c.config.nixpkgs.hostPlatform.system or null);
in {
  drv = t.drvPath;
  out = t.outPath;
  buildSystem = t.system;
  hostSystem = if h.success && h.value != null then h.value else (c.pkgs.stdenv.hostPlatform.system or t.system);
}`

/** The first `error:` line of Nix's stderr with what follows it on that line, for messages. */
export function nixErrorSummary(stderr: string): string {
  const lines = stderr.split('\n')
  const i = lines.findIndex(l => /^\s*error:/.test(l))
  if (i < 0) return tail(stderr, 1) || 'no error message'
  const first = lines[i].replace(/^\s*error:\s*/, '').trim()
  // Nix often puts the real message on the next lines ("error: … while evaluating …").
  const more = lines.slice(i + 1).find(l => /^\s*error:/.test(l))
  return more && first.length < 20 ? more.replace(/^\s*error:\s*/, '').trim() : first
}

/** The derivation whose builder failed, from Nix 2.8+ messages ("builder for '…drv' failed", "Cannot build '…drv'"). */
export function failedDerivation(stderr: string): string | undefined {
  const m = /(?:builder for|Cannot build) '(\/nix\/store\/[^']+\.drv)'/.exec(stderr)
  return m?.[1]
}

/** Runs the runner's Nix: flake evaluation, builds, closure queries and exports. */
export class RunnerNix {
  constructor(private readonly settings: Array<[string, string]>) {}

  /** Settings as `--option name value` (argv, never a shell string). */
  private optionArgs(): string[] {
    return this.settings.flatMap(([k, v]) => ['--option', k, v])
  }

  /** Arguments every `nix` (new CLI) call gets: experimental features named explicitly (Nix 2.8+). */
  nixArgs(): string[] {
    return ['--extra-experimental-features', 'nix-command flakes', ...this.optionArgs()]
  }

  legacyArgs(): string[] {
    return this.optionArgs()
  }

  withSetting(name: string, value: string): RunnerNix {
    return new RunnerNix([...this.settings, [name, value]])
  }

  async evaluate(flake: FlakeTarget): Promise<Evaluation> {
    const r = await runCommand('nix', [
      ...this.nixArgs(),
      'eval',
      '--json',
      flake.installable,
      '--apply',
      EVAL_APPLY
    ])
    if (r.exitCode !== 0) {
      if (/does not provide attribute/.test(r.stderr)) {
        const names = await this.configurationNames(flake.ref)
        throw new ActionError(
          `flake ${flake.ref} has no nixosConfigurations.${flake.name}`,
          names.length > 0
            ? `Use one of: ${names.map(n => `${flake.ref}#${n}`).join(', ')}`
            : `The flake defines no nixosConfigurations; check the flake reference and its outputs.`,
          'build',
          tail(r.stderr, 30)
        )
      }
      throw new ActionError(
        `evaluating ${flake.installable} failed: ${nixErrorSummary(r.stderr)}`,
        'Fix the configuration (the log shows the full Nix error; `nix eval` it locally to reproduce).',
        'build',
        tail(r.stderr, 40)
      )
    }
    const v = JSON.parse(r.stdout) as { drv: string; out: string; buildSystem: string; hostSystem: string }
    return {
      drvPath: assertStorePath(v.drv, 'toplevel drvPath'),
      outPath: assertStorePath(v.out, 'toplevel outPath'),
      buildSystem: String(v.buildSystem),
      hostSystem: String(v.hostSystem)
    }
  }

  async configurationNames(ref: string): Promise<string[]> {
    const r = await runCommand('nix', [
      ...this.nixArgs(),
      'eval',
      '--json',
      `${ref}#nixosConfigurations`,
      '--apply',
      'builtins.attrNames'
    ])
    try {
      return r.exitCode === 0 ? (JSON.parse(r.stdout) as string[]) : []
    } catch {
      return []
    }
  }

  /** Builds a derivation, holding a GC root at `gcRoot` so the result survives until the post step. */
  async build(drvPath: string, outPath: string, gcRoot: string): Promise<BuildResult> {
    const built: string[] = []
    const r = await runCommand(
      'nix-store',
      [...this.legacyArgs(), '--realise', drvPath, '--add-root', gcRoot],
      {
        onStderrLine: line => {
          const m = /^building '(\/nix\/store\/[^']+\.drv)'/.exec(line)
          if (m) built.push(m[1])
          core.info(line)
        }
      }
    )
    if (r.exitCode === 0) return { built }
    const failed = failedDerivation(r.stderr)
    if (failed) {
      const log = await runCommand('nix-store', [...this.legacyArgs(), '--read-log', failed])
      throw new ActionError(
        `building ${outPath} failed: the builder of ${failed} failed`,
        'Fix that derivation (its log tail is below); re-run the build locally with `nix log` to see all of it.',
        'build',
        `$ nix-store --read-log ${failed} | tail -n 40\n` +
          tail(log.exitCode === 0 ? log.stdout : r.stderr, 40)
      )
    }
    const platform = /a '([^']+)' with features \{[^}]*\} is required to build/.exec(r.stderr)
    throw new ActionError(
      `building ${outPath} failed: ${nixErrorSummary(r.stderr)}`,
      platform
        ? `The runner cannot build for ${platform[1]}: keep binfmt: auto (QEMU emulation), or add a builder for ${platform[1]} via nix-options (builders = …). With a multi-user Nix, the runner's user must be in trusted-users for extra-platforms to apply.`
        : 'See the Nix error in the log.',
      'build',
      tail(r.stderr, 40)
    )
  }

  /** The output paths of derivations (for the store cache: what this run built itself). */
  async outputsOf(drvs: string[]): Promise<string[]> {
    if (drvs.length === 0) return []
    const r = await runCommand('nix-store', [...this.legacyArgs(), '--query', '--outputs', ...drvs])
    return r.exitCode === 0 ? r.stdout.split('\n').filter(l => l.startsWith('/nix/store/')) : []
  }

  /** The closure of a built path with NAR sizes and references. */
  async closure(outPath: string): Promise<PathInfo[]> {
    const r = await runCommand('nix', [...this.nixArgs(), 'path-info', '--json', '--recursive', outPath])
    if (r.exitCode !== 0)
      throw new ActionError(
        `listing the closure of ${outPath} failed: ${nixErrorSummary(r.stderr)}`,
        'The build result may have been garbage-collected; re-run the job.',
        'build',
        tail(r.stderr, 20)
      )
    return parsePathInfoJson(r.stdout)
  }
}

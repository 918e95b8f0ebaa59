import { ActionError } from '../errors'
import { printUntrusted } from '../log/untrusted'
import { CommandResult, runCommand, RunOptions, tail } from '../run-command'
import { PathInfo, parsePathInfoJson } from './closure'
import { FlakeTarget } from './flake'
import { assertStorePath } from './store-path'
import { STALLED_CACHE_BOUNDS } from './store-uri'
import { promises as fs } from 'fs'
import { LEGACY_EVAL_NIX } from './legacy-eval.generated'
import { Evaluation } from './evaluation'
import {
  ConfiguredPlatforms,
  IgnoredSettings,
  parseConfiguredPlatforms,
  parseIgnoredSettings,
  parseStoreInfo,
  StoreInfo
} from './daemon'
import { LegacySource, MachineEvaluation, parseMachine, RawMachine } from './legacy'

export type { Evaluation } from './evaluation'

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
  /**
   * @param secretConfig Nix settings that are secrets (access-tokens from github-token), handed to
   * every call on a pipe, never in argv, environment or a file (see runCommand's secretNixConfig).
   */
  constructor(
    private readonly settings: Array<[string, string]>,
    private readonly secretConfig?: string
  ) {}

  /** Runs a Nix command with this runner's secret settings, if any. */
  private run(cmd: string, args: string[], opts: RunOptions = {}): Promise<CommandResult> {
    return runCommand(cmd, args, { ...opts, secretNixConfig: this.secretConfig })
  }

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
    return new RunnerNix([...this.settings, [name, value]], this.secretConfig)
  }

  async evaluate(flake: FlakeTarget): Promise<Evaluation> {
    const r = await this.run('nix', [
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

  /**
   * Runs the legacy evaluation expression (configuration.nix or NixOps network files) with its
   * arguments as one JSON string: `attr` is "names" or "result".
   */
  private async evalLegacy(
    source: LegacySource,
    attr: 'names' | 'tags' | 'result',
    machines: string[],
    exprFile: string
  ): Promise<unknown> {
    await fs.writeFile(exprFile, LEGACY_EVAL_NIX)
    const args =
      source.kind === 'configuration'
        ? { configuration: source.configuration, nixpkgs: source.nixpkgs, system: source.system }
        : { networks: source.networks, nixpkgs: source.nixpkgs, system: source.system, machines }
    const r = await this.run('nix', [
      ...this.nixArgs(),
      'eval',
      '--json',
      '--impure',
      '--file',
      exprFile,
      '--argstr',
      'argsJson',
      JSON.stringify(args),
      attr
    ])
    if (r.exitCode !== 0) {
      const summary = nixErrorSummary(r.stderr)
      const nixpkgsMissing = /file '[^']*' was not found in the Nix search path/.test(r.stderr)
      throw new ActionError(
        `evaluating ${source.label} failed: ${summary}`,
        nixpkgsMissing
          ? 'Set the nixpkgs input to a nixpkgs checkout (e.g. one pinned in your repository), or put nixpkgs on NIX_PATH.'
          : 'Fix the configuration (the log shows the full Nix error; `nix-instantiate --eval` it locally to reproduce).',
        'build',
        tail(r.stderr, 40)
      )
    }
    return JSON.parse(r.stdout)
  }

  /** The machine names of NixOps network files (no machine is evaluated). */
  async networkMachineNames(source: LegacySource, exprFile: string): Promise<string[]> {
    const v = (await this.evalLegacy(source, 'names', [], exprFile)) as {
      names?: string[]
      resourceFiles?: string[]
    }
    if (v.resourceFiles)
      throw new ActionError(
        `${v.resourceFiles.join(', ')} declare resources, which nix-deploy-action does not create`,
        'NixOps resources (cloud key pairs, volumes, …) need NixOps state; this action deploys existing machines statelessly. Move the resources out of the network files given to the action.',
        'inputs'
      )
    return v.names ?? []
  }

  /** deployment.tags of the named machines of a network (for the machines input's `@tag`). */
  async networkMachineTags(
    source: LegacySource,
    machines: string[],
    exprFile: string
  ): Promise<Record<string, string[]>> {
    return (await this.evalLegacy(source, 'tags', machines, exprFile)) as Record<string, string[]>
  }

  /** Evaluates the selected machines of a network (or the one configuration.nix). */
  async evaluateLegacy(
    source: LegacySource,
    machines: string[],
    exprFile: string
  ): Promise<MachineEvaluation[]> {
    const v = (await this.evalLegacy(source, 'result', machines, exprFile)) as {
      machines: Record<string, RawMachine>
    }
    return Object.entries(v.machines).map(([name, m]) => parseMachine(name, m))
  }

  async configurationNames(ref: string): Promise<string[]> {
    const r = await this.run('nix', [
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

  /**
   * Builds derivations in one Nix invocation (several machines' systems build together and share
   * what they have in common), holding GC roots at `gcRoot`, `gcRoot`-2, … so the results survive
   * until the post step. `what` names the build in messages.
   */
  async build(drvPaths: string | string[], what: string, gcRoot: string): Promise<BuildResult> {
    const built: string[] = []
    const drvs = typeof drvPaths === 'string' ? [drvPaths] : drvPaths
    const r = await this.run(
      'nix-store',
      [...this.legacyArgs(), '--realise', ...drvs, '--add-root', gcRoot],
      {
        onStderrLine: line => {
          const m = /^building '(\/nix\/store\/[^']+\.drv)'/.exec(line)
          if (m) built.push(m[1])
          // Build output is the derivations' own (a pull request's code): shown, never obeyed.
          printUntrusted(line)
        }
      }
    )
    if (r.exitCode === 0) return { built }
    const failed = failedDerivation(r.stderr)
    if (failed) {
      const log = await this.run('nix-store', [...this.legacyArgs(), '--read-log', failed])
      throw new ActionError(
        `building ${what} failed: the builder of ${failed} failed`,
        'Fix that derivation (its log tail is below); re-run the build locally with `nix log` to see all of it.',
        'build',
        `$ nix-store --read-log ${failed} | tail -n 40\n` +
          tail(log.exitCode === 0 ? log.stdout : r.stderr, 40)
      )
    }
    const platform = /a '([^']+)' with features \{[^}]*\} is required to build/.exec(r.stderr)
    throw new ActionError(
      `building ${what} failed: ${nixErrorSummary(r.stderr)}`,
      platform
        ? `The runner cannot build for ${platform[1]}: keep binfmt: auto (QEMU emulation), or add a builder for ${platform[1]} via nix-options (builders = …). With a multi-user Nix, the runner's user must be in trusted-users for extra-platforms to apply.`
        : 'See the Nix error in the log.',
      'build',
      tail(r.stderr, 40)
    )
  }

  /**
   * What the store this Nix builds in says of this user (version, trust; undefined when it cannot
   * say, as Nix 2.8), asked with this run's settings, and which of them a daemon ignored.
   */
  async storeInfo(): Promise<{ info: StoreInfo; ignored: IgnoredSettings } | undefined> {
    for (const sub of ['info', 'ping']) {
      const r = await this.run('nix', [...this.nixArgs(), 'store', sub, '--json'])
      const info = r.exitCode === 0 ? parseStoreInfo(r.stdout) : undefined
      if (info) return { info, ignored: parseIgnoredSettings(r.stderr) }
    }
    return undefined
  }

  /** The platforms the runner's nix.conf lists (`config show` in Nix 2.26, `show-config` in 2.8). */
  async configuredPlatforms(): Promise<ConfiguredPlatforms | undefined> {
    for (const sub of [['config', 'show'], ['show-config']]) {
      const r = await this.run('nix', ['--extra-experimental-features', 'nix-command', ...sub, '--json'])
      if (r.exitCode === 0) return parseConfiguredPlatforms(r.stdout)
    }
    return undefined
  }

  /** The output paths of derivations (for the store cache: what this run built itself). */
  async outputsOf(drvs: string[]): Promise<string[]> {
    if (drvs.length === 0) return []
    const r = await this.run('nix-store', [...this.legacyArgs(), '--query', '--outputs', ...drvs])
    return r.exitCode === 0 ? r.stdout.split('\n').filter(l => l.startsWith('/nix/store/')) : []
  }

  /** The closure of `outPath`, with NAR sizes and references: in the runner's store, or in the binary cache `store` (its .narinfo files). */
  async closure(outPath: string, store?: string): Promise<PathInfo[]> {
    const from = store ? ['--store', store] : []
    const r = await this.run('nix', [
      // Before nix-options, which may set them otherwise (a slow proxy).
      ...(store ? STALLED_CACHE_BOUNDS : []),
      ...this.nixArgs(),
      'path-info',
      ...from,
      '--json',
      '--recursive',
      outPath
    ])
    if (r.exitCode !== 0)
      throw new ActionError(
        `listing the closure of ${outPath}${store ? ` in ${store}` : ''} failed: ${nixErrorSummary(r.stderr)}`,
        store
          ? 'The runner must read the binary cache the plan names (for S3: credentials in the environment), and the build job must have published to it; re-run the build job if the cache lost the paths.'
          : 'The build result may have been garbage-collected; re-run the job.',
        'build',
        tail(r.stderr, 20)
      )
    return parsePathInfoJson(r.stdout)
  }
}

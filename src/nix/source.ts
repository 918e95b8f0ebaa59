import type { DeployPlanDoc } from './deploy-plan'
import { FlakeTarget } from './flake'

/**
 * What to build: a flake's nixosConfigurations entry, a classic configuration.nix evaluated with a
 * nixpkgs like nixos-rebuild does, or NixOps network files (one or several machines); or nothing:
 * a shard of a deploy plan, built and published by an earlier job (deploy-plan, issue #35).
 */
export type Source =
  | { kind: 'flake'; flake: FlakeTarget; label: string }
  | { kind: 'configuration'; configuration: string; nixpkgs: string; system: string; label: string }
  | {
      kind: 'network'
      networks: string[]
      nixpkgs: string
      system: string
      /** Machine names or globs to deploy; empty: all. */
      machines: string[]
      label: string
    }
  | {
      kind: 'plan'
      plan: DeployPlanDoc
      /** The shard's id ('' : every machine of the plan). */
      shard: string
      label: string
    }

/** What a build's package diff compares against (diff-against): a store path, or a flake configuration. */
export type Baseline = { storePath: string } | { flake: FlakeTarget }

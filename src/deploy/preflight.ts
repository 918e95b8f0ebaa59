import { ActionError } from '../errors'
import { BootFile, bootBytesToAdd } from '../nix/boot'
import { formatBytes } from '../log/format'
import { RemoteState } from '../target/remote-state'
import type { DeployUserFacts } from '../nix/deploy-user-facts'

/** Extra room on the target's /nix beyond the NAR bytes to copy: filesystem overhead, the Nix db, logs. */
export const SPACE_MARGIN_BYTES = 64 * 1024 * 1024
export const SPACE_FACTOR = 1.1

/** Checks before touching the target: it runs a NixOS-shaped system of the right platform, has Nix. */
export function checkTarget(state: RemoteState, label: string, hostSystem: string): void {
  if (!state.hasNixStore)
    throw new ActionError(
      `${label} has no nix-store in PATH`,
      'Deploy to a NixOS machine (or one with Nix installed), as a user whose PATH includes Nix.',
      'connect'
    )
  if (!state.current || !state.platform)
    throw new ActionError(
      `${label} does not run a NixOS system (no /run/current-system/system)`,
      'This action switches NixOS systems; install NixOS on the target first (a NixOS SD image for a Pi).',
      'connect'
    )
  if (state.platform !== hostSystem)
    throw new ActionError(
      `the configuration is for ${hostSystem} but ${label} runs ${state.platform}`,
      "Check that the flake attribute names this machine's configuration (nixpkgs.hostPlatform must match the target).",
      'connect'
    )
}

/** Refuses a copy that would fill the target's /nix (an SD card full mid-copy helps nobody). */
export function checkSpace(state: RemoteState, label: string, bytesToCopy: number): void {
  if (state.nixFreeBytes === undefined || bytesToCopy === 0) return
  const needed = Math.ceil(bytesToCopy * SPACE_FACTOR) + SPACE_MARGIN_BYTES
  if (state.nixFreeBytes < needed)
    throw new ActionError(
      `${label} has ${formatBytes(state.nixFreeBytes)} free on /nix but the copy needs about ${formatBytes(needed)} (${formatBytes(bytesToCopy)} of store paths plus margin)`,
      'Free space on the target (nix-collect-garbage -d, or set keep-generations so old systems are removed after each deploy), then re-run.',
      'copy'
    )
}

/** Room left on /boot beyond the new files: the boot loader's configuration and temporary copies. */
export const BOOT_MARGIN_BYTES = 1024 * 1024

/**
 * Refuses, before anything is copied, a generation whose kernel and initrd do not fit on the
 * target's /boot (a Pi's firmware partition fills up with one kernel and initrd per generation).
 */
export function checkBootSpace(state: RemoteState, label: string, files: BootFile[]): void {
  if (state.bootFreeBytes === undefined) return
  const toAdd = bootBytesToAdd(files, state.bootFiles)
  if (toAdd === 0) return
  const needed = toAdd + Math.max(BOOT_MARGIN_BYTES, Math.ceil(toAdd / 10))
  if (state.bootFreeBytes < needed)
    throw new ActionError(
      `${label} has ${formatBytes(state.bootFreeBytes)} free on /boot but the new generation's kernel and initrd need about ${formatBytes(needed)} (${formatBytes(toAdd)} plus margin)`,
      'Keep fewer generations in /boot (boot.loader.generic-extlinux-compatible.configurationLimit, or systemd-boot.configurationLimit), or delete old generations (nix-env --delete-generations, or keep-generations on the next deploy), then re-run. Nothing was copied.',
      'copy'
    )
}

/**
 * Before anything changes on a deploy user's gate (nixos/deploy-user.nix): the paths must come
 * signed (signing-key, or a deploy plan's cache, whose paths the build signed), the new system must
 * bring the module (nda-root activates no system without it: it would lock the deploy user out),
 * and every health check must be one that system lists (the gate runs no other command). `facts`
 * are the new system's, read where it was built; undefined from a deploy plan of an earlier release.
 */
export function checkGatedDeploy(
  label: string,
  toplevel: string,
  facts: DeployUserFacts | undefined,
  healthChecks: string[],
  signed: boolean
): void {
  if (!signed) throw unsignedGateError(label)
  if (facts === undefined)
    throw new ActionError(
      `${label} logs in as a deploy user, and deploy-plan does not say whether its new system has services.nix-deploy-action.deployUser (a plan of an earlier release)`,
      "Make the plan again with this release's build job (mode build with publish-to), then re-run the shards. Nothing was changed on the target.",
      'connect'
    )
  const etc = `${toplevel}/etc/nix-deploy-action`
  if (!facts.enabled)
    throw new ActionError(
      `${label} logs in as a deploy user, and the new system does not have services.nix-deploy-action.deployUser (its ${etc}/deploy-user is missing): activated, it would lock the deploy user out, so the target refuses it`,
      'Import nixos/deploy-user.nix in the configuration and enable services.nix-deploy-action.deployUser, then re-run. Nothing was changed on the target.',
      'connect'
    )
  const listed = new Set(facts.healthChecks)
  const unlisted = healthChecks.filter(c => !listed.has(c))
  if (unlisted.length > 0)
    throw new ActionError(
      `${label} logs in as a deploy user, which runs only the health checks the new system lists, and it does not list ${unlisted.map(c => JSON.stringify(c)).join(', ')}`,
      'Add each to services.nix-deploy-action.deployUser.healthChecks exactly as the health-checks input writes it, then re-run. Nothing was changed on the target.',
      'connect'
    )
}

/** A deploy user's gate and no signing-key: nothing could be imported. */
export function unsignedGateError(label: string): ActionError {
  return new ActionError(
    `${label} logs in as a deploy user (nixos/deploy-user.nix), which imports only signed store paths, and signing-key is not set`,
    "Set signing-key to the Nix secret key whose public half is the target's services.nix-deploy-action.deployUser.signingPublicKey (a secret, e.g. in a protected environment). Nothing was changed on the target.",
    'connect'
  )
}

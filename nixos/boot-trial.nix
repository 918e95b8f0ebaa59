# nix-deploy-action's boot trial for NixOS targets (see boot-trial.sh): with it, a deploy with
# `reboot: auto` or `always` boots the new system on trial, and a system that boots but cannot be
# reached over SSH (or fails the deploy's health checks) is replaced by the previous one after one
# more reboot, without hands on the machine. Without it, on a boot loader without one-shot entries
# (extlinux: a Raspberry Pi), such a system stays the default until someone picks another in the
# boot menu.
#
#   imports = [ "${nix-deploy-action}/nixos/boot-trial.nix" ];   # the action's repository
#   services.nix-deploy-action.bootTrial.enable = true;
#
# The action sees the unit below in the new system (etc/systemd/system) and only then boots on trial;
# the unit's X-NixDeployAction-Protocol says which steps the trial expects of it.
# It cannot help a system that does not reach user space (a kernel that panics): for that, a
# hardware watchdog (systemd.watchdog.runtimeTime) and the previous generation in the boot menu.
{ config, lib, pkgs, ... }:
let
  cfg = config.services.nix-deploy-action.bootTrial;
in
{
  options.services.nix-deploy-action.bootTrial.enable = lib.mkEnableOption
    "the boot trial of nix-deploy-action: a new system booted by a deploy goes back to the previous one unless the deploy confirms it over SSH";

  config = lib.mkIf cfg.enable {
    systemd.services.nix-deploy-boot-trial = {
      description = "nix-deploy-action boot trial: confirm the new system or go back to the previous one";
      wantedBy = [ "multi-user.target" ];
      after = [ "local-fs.target" ];
      # The trial's protocol with the action (its record and renames, boot-trial.sh): the action
      # reads it here to know how to confirm the boot.
      unitConfig."X-NixDeployAction-Protocol" = "2";
      # Only a boot starts a trial; a switch that starts this unit finds none and ends at once.
      restartIfChanged = false;
      path = [ config.nix.package pkgs.coreutils pkgs.gnused config.systemd.package ];
      serviceConfig = {
        Type = "simple";
        ExecStart = "${pkgs.runtimeShell} ${./boot-trial.sh}";
      };
    };
  };
}

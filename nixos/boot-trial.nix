# nix-deploy-action's boot trial for NixOS targets (see boot-trial.sh): with it, a deploy with
# `reboot: auto` or `always` boots the new system on trial, and a system that boots but cannot be
# reached over SSH (or fails the deploy's health checks) is replaced by the previous one after one
# more reboot, without hands on the machine.
#
#   imports = [ "${nix-deploy-action}/nixos/boot-trial.nix" ];   # the action's repository
#   services.nix-deploy-action.bootTrial.enable = true;
#
# The action sees the unit below in the new system (etc/systemd/system) and only then boots on trial;
# the unit's X-NixDeployAction-Protocol says which steps the trial expects of it.
#
# A system that never reaches user space (a kernel that panics, an initrd that cannot mount its
# root) never runs the trial. On U-Boot with extlinux (a Raspberry Pi's stock NixOS image), bootOnce
# covers it: the new system is booted once and the previous one stays the default until the
# deploy confirms the new one (boot-once.sh; its hook is installed once per machine). It takes
# effect from the deploy after the one that brings it (the running system's /etc says it is there).
{ config, lib, pkgs, ... }:
let
  cfg = config.services.nix-deploy-action.bootTrial;
  once = cfg.enable && cfg.bootOnce.enable;
  fw = cfg.bootOnce.firmwareMount;
  # The firmware partition's mount unit as systemd names it (systemd-escape --path, for the plain
  # absolute paths the assertion below allows).
  firmwareMountUnit =
    builtins.replaceStrings [ "-" "/" ] [ "\\x2d" "-" ] (builtins.substring 1 (builtins.stringLength fw - 1) fw) + ".mount";
in
{
  options.services.nix-deploy-action.bootTrial = {
    enable = lib.mkEnableOption
      "the boot trial of nix-deploy-action: a new system booted by a deploy goes back to the previous one unless the deploy confirms it over SSH";

    bootOnce = {
      enable = lib.mkEnableOption ''
        one-shot boots of a new system through U-Boot (boot-once.sh): the previous system stays the
        default until the deploy confirms the new one, so a new kernel that panics is followed by a
        boot of the previous one. Needs the hook in U-Boot's environment, installed once:
        `boot-once.sh install "mmc 0:1"` (after `saveenv` at U-Boot's prompt once)'';
      firmwareMount = lib.mkOption {
        type = lib.types.str;
        default = "/boot/firmware";
        description = ''
          Where the FAT partition U-Boot reads (the hook's DEVICE) is mounted: the action writes
          nix-deploy-once there. On NixOS's SD image this is the firmware partition, which it
          does not mount by default; this module mounts it.'';
      };
      fwEnvConfig = lib.mkOption {
        type = lib.types.str;
        default = "${cfg.bootOnce.firmwareMount}/uboot.env 0x0000 0x4000";
        description = ''
          /etc/fw_env.config for fw_setenv (only boot-once.sh install uses it): a Raspberry Pi's
          U-Boot keeps its environment in uboot.env on the FAT partition; the size must be its
          CONFIG_ENV_SIZE (0x4000 in the rpi defconfigs; U-Boot's `printenv` ends with the size).'';
      };
      panicSeconds = lib.mkOption {
        type = lib.types.int;
        default = 10;
        description = "panic=N: a kernel that panics resets after N seconds (and the boot falls back).";
      };
    };
  };

  config = {
    assertions = [ {
      assertion = !once || builtins.match "/[A-Za-z0-9_/-]*[A-Za-z0-9_]" fw != null;
      message = "services.nix-deploy-action.bootTrial.bootOnce.firmwareMount must be an absolute path of letters, digits, _, - and / (not ending in /): ${fw}";
    } ];
    # Each condition on a whole option (the fixture's stand-in for the module system, which the
    # tests evaluate this with, takes them there; NixOS takes them anywhere).
    systemd.services = lib.mkIf cfg.enable { nix-deploy-boot-trial = {
      description = "nix-deploy-action boot trial: confirm the new system or go back to the previous one";
      wantedBy = [ "multi-user.target" ];
      # With bootOnce, the one-shot file is read in the boot that follows: the FAT partition mounted
      # first (nofail alone would not wait). Wanted, not required: a partition that fails to mount
      # in the new system's boot (a kernel without vfat, a changed label) must not keep its trial
      # from running, and going back.
      after = [ "local-fs.target" ] ++ (if once then [ firmwareMountUnit ] else [ ]);
      wants = if once then [ firmwareMountUnit ] else [ ];
      # The trial's protocol with the action (its record and renames, boot-trial.sh): the action
      # reads it here to know how to confirm the boot.
      unitConfig = { "X-NixDeployAction-Protocol" = "2"; };
      # Only a boot starts a trial; a switch that starts this unit finds none and ends at once.
      restartIfChanged = false;
      path = [ config.nix.package pkgs.coreutils pkgs.gnused pkgs.util-linux config.systemd.package ];
      serviceConfig = {
        Type = "simple";
        ExecStart = "${pkgs.runtimeShell} ${./boot-trial.sh}";
      };
    }; };
    environment.etc = lib.mkIf once {
      # What the action reads to know that this machine boots a new system once (probe.sh).
      "nix-deploy-action/boot-once".text = "${cfg.bootOnce.firmwareMount}/nix-deploy-once\n";
      # For boot-once.sh install (fw_setenv): where U-Boot keeps its environment.
      "fw_env.config".text = "${cfg.bootOnce.fwEnvConfig}\n";
    };
    # boot.panic_on_fail: NixOS's stage 1 panics (rather than waiting at a shell) when it cannot
    # mount the root; panic=N: a panic resets the machine.
    boot.kernelParams = lib.mkIf once [ "panic=${toString cfg.bootOnce.panicSeconds}" "boot.panic_on_fail" ];
    fileSystems = lib.mkIf once {
      ${cfg.bootOnce.firmwareMount} = {
        device = lib.mkDefault "/dev/disk/by-label/FIRMWARE";
        fsType = lib.mkDefault "vfat";
        options = lib.mkForce [ "nofail" ];
      };
    };
    environment.systemPackages = lib.mkIf once [
      pkgs.libubootenv
      (pkgs.writeShellScriptBin "nix-deploy-boot-once" ''exec ${pkgs.runtimeShell} ${./boot-once.sh} "$@"'')
    ];
    # The watchdog resets a system that hangs before the trial (systemd feeds it while it runs).
    systemd.watchdog.runtimeTime = lib.mkIf once (lib.mkDefault "30s");
  };
}

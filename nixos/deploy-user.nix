# nix-deploy-action's deploy user: a deploy key that is not root. With it, the action logs in as
# `nix-deploy`, whose SSH key runs only the gate (deploy-user/gate.sh): the action's own steps, with
# their values as arguments. Store paths go into the Nix daemon as an untrusted user, so only paths
# signed by `signingPublicKey` get in; the steps that need root go through one sudo rule to nda-root
# (deploy-user/root.sh), which sets, activates or boots only a system this machine already has or
# a new one signed by that key with this module in it. What a leaked key can do: docs/security.md.
#
#   imports = [ "${nix-deploy-action}/nixos/deploy-user.nix" ];   # the action's repository, same tag
#   services.nix-deploy-action.deployUser = {
#     enable = true;
#     authorizedKeys = [ "ssh-ed25519 AAAA… deploy@ci" ];
#     signingPublicKey = "deploy-1:…";          # the public half of the action's signing-key
#     healthChecks = [ "systemctl is-active nginx" ];
#   };
#
# The workflow then sets target-user: nix-deploy and signing-key (its secret half); sudo does not
# apply (the gate uses its own rule). The module's scripts are the action's, from this checkout:
# pin it to the same release as the action's `uses:` ref (the action checks and says which differs).
{ config, lib, pkgs, ... }:
let
  cfg = config.services.nix-deploy-action.deployUser;
  protocol = lib.fileContents ./deploy-user/PROTOCOL;
  scriptsDir = ../src/target/scripts;
  scriptNames = builtins.filter (n: lib.hasSuffix ".sh" n) (builtins.attrNames (builtins.readDir scriptsDir));
  # The same hash the action computes of its scripts (scripts/embed-scripts.js): sorted names, contents joined.
  scriptsHash = builtins.hashString "sha256"
    (builtins.concatStringsSep "" (map (n: builtins.readFile (scriptsDir + "/${n}")) scriptNames));
  # Everything the gate, nda-root and the action's scripts call (sh from bash, invoked as sh: no rc
  # file; sudo is called by its path).
  path = lib.makeBinPath [
    pkgs.bash config.nix.package pkgs.coreutils pkgs.gnutar pkgs.zstd pkgs.xz pkgs.gzip pkgs.util-linux
    pkgs.gnused pkgs.gawk pkgs.gnugrep pkgs.findutils pkgs.procps config.systemd.package
  ];
  # dash: no rc file of any kind is read (bash over SSH reads ~/.bashrc, in the deploy user's home).
  sh = "${pkgs.dash}/bin/dash";
  # A script with common.sh in front of it, its placeholders filled in.
  fill = file: extra: builtins.replaceStrings
    ([ "@path@" "@scripts@" "@protocol@" "@scriptsHash@" ] ++ builtins.attrNames extra)
    ([ path "${scriptsDir}" protocol scriptsHash ] ++ builtins.attrValues extra)
    (builtins.readFile ./deploy-user/common.sh + builtins.readFile file);
  root = pkgs.writeScript "nda-root" ("#!${sh}\n" + fill ./deploy-user/root.sh {
    "@publicKey@" = cfg.signingPublicKey;
    "@keyDirs@" = builtins.concatStringsSep " " cfg.keyDirs;
  });
  gate = pkgs.writeScript "nix-deploy-action-gate" ("#!${sh}\n" + fill ./deploy-user/gate.sh {
    "@root@" = "${root}";
    "@sudo@" = "/run/wrappers/bin/sudo";
    "@keyName@" = builtins.head (lib.splitString ":" cfg.signingPublicKey);
    "@tmpdir@" = home;
  });
  # The deploy user's own directory: imports are unpacked there (on the disk, not in a small /tmp).
  home = "/var/lib/${cfg.user}";
in
{
  options.services.nix-deploy-action.deployUser = {
    enable = lib.mkEnableOption "a deploy user for nix-deploy-action whose key is not root";
    user = lib.mkOption {
      type = lib.types.str;
      default = "nix-deploy";
      description = "The deploy user's name (the workflow's target-user).";
    };
    authorizedKeys = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      description = "The public SSH keys of the action's ssh-key (each bound to the gate, with no forwarding, PTY or shell).";
    };
    signingPublicKey = lib.mkOption {
      type = lib.types.str;
      example = "deploy-1:3Xs…=";
      description = ''
        The public half of the action's signing-key (nix key convert-secret-to-public). Store paths
        are imported only when signed by a key in nix.settings.trusted-public-keys (this one is
        added), and a new system is activated only when signed by this key.'';
    };
    keyDirs = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ "/run/keys" ];
      description = "The only directories deployment.keys may be written to (each key's destDir).";
    };
    healthChecks = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      description = ''
        The health checks the deploy may run as root, exactly as the workflow's health-checks
        input writes them (one per entry): the gate runs no other command.'';
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      { assertion = !(builtins.elem cfg.user config.nix.settings.trusted-users);
        message = "services.nix-deploy-action.deployUser: ${cfg.user} must not be in nix.settings.trusted-users (a trusted user imports unsigned paths)"; }
      { assertion = config.nix.settings.require-sigs or true;
        message = "services.nix-deploy-action.deployUser needs nix.settings.require-sigs"; }
      { assertion = config.security.sudo.enable;
        message = "services.nix-deploy-action.deployUser needs security.sudo.enable (its one rule runs nda-root)"; }
      { assertion = builtins.length (lib.splitString ":" cfg.signingPublicKey) == 2;
        message = "services.nix-deploy-action.deployUser.signingPublicKey must be NAME:BASE64 (nix key convert-secret-to-public)"; }
    ];
    users.users.${cfg.user} = {
      isSystemUser = true;
      group = cfg.user;
      inherit home;
      createHome = true;
      # The forced command runs as `$SHELL -c GATE`: dash reads no rc file.
      shell = pkgs.dash;
      openssh.authorizedKeys.keys = map (k: ''restrict,command="${gate}" ${k}'') cfg.authorizedKeys;
    };
    users.groups.${cfg.user} = { };
    # Whatever key logs in as the deploy user (one added elsewhere too) gets the gate and nothing else.
    services.openssh.extraConfig = ''
      Match User ${cfg.user}
        ForceCommand ${gate}
        DisableForwarding yes
        PermitTTY no
        PermitUserRC no
      Match all
    '';
    security.sudo.extraRules = [{
      users = [ cfg.user ];
      commands = [{ command = "${root}"; options = [ "NOPASSWD" ]; }];
    }];
    nix.settings.trusted-public-keys = [ cfg.signingPublicKey ];
    # Read by nda-root: a new system without this file would lock the deploy user out.
    environment.etc."nix-deploy-action/deploy-user".text = "protocol ${protocol} scripts ${scriptsHash}\n";
    environment.etc."nix-deploy-action/health-checks".text = lib.concatMapStrings (c: c + "\n") cfg.healthChecks;
  };
}

# The Nix expression that evaluates a classic configuration.nix or NixOps network files. It uses
# only nixpkgs' public entry points -- `<nixpkgs/nixos>` (nixos/default.nix) for a configuration,
# nixos/lib/eval-config.nix for each machine of a network, as NixOps did -- and declares the
# `deployment.*` options with ordinary lib.mkOption / lib.types, so it works the same on any
# nixpkgs. Arguments come as one JSON string (`--argstr argsJson`), never spliced into Nix code.
#
#   names   the machine names of the network files (cheap: no machine is evaluated)
#   tags    { <name> = deployment.tags; } of the machines given (only that option is forced)
#   result  { description, machines.<name> = { drv, out, buildSystem, hostSystem, targetHost,
#           targetPort, targetUser, keys, ignored } } for the selected machines (or the one
#           configuration, named "")
# (Embedded into the bundle by scripts/embed-scripts.js as legacy-eval.generated.ts.)
{ argsJson }:
let
  args = builtins.fromJSON argsJson;
  inherit (builtins) attrNames concatMap elem elemAt filter genList length listToAttrs tryEval;
  unique = builtins.foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ];

  # "<nixpkgs>" through NIX_PATH, like nixos-rebuild; otherwise an absolute path.
  resolve = s:
    if builtins.substring 0 1 s == "<"
    then builtins.findFile builtins.nixPath (builtins.substring 1 (builtins.stringLength s - 2) s)
    else /. + s;
  nixpkgs = resolve args.nixpkgs;

  # Applied to an evaluated NixOS configuration. nixpkgs.hostPlatform throws when unset on some
  # nixpkgs versions, hence tryEval.
  describe = eval:
    let
      t = eval.config.system.build.toplevel;
      h = tryEval (eval.config.nixpkgs.hostPlatform.system or null);
    in {
      drv = t.drvPath;
      out = t.outPath;
      buildSystem = t.system;
      hostSystem = if h.success && h.value != null then h.value else (eval.pkgs.stdenv.hostPlatform.system or t.system);
    };

  # --- NixOps network files (as "nixops create a.nix b.nix"): attribute sets, or functions whose
  # arguments all have defaults.
  networks = map (f: let v = import (/. + f); in if builtins.isFunction v then v { } else v) (args.networks or [ ]);
  reserved = [ "network" "defaults" "resources" "require" ];
  names = unique (concatMap (n: filter (a: !(elem a reserved)) (attrNames n)) networks);
  resourceFiles = concatMap (i: if (elemAt networks i) ? resources then [ (elemAt args.networks i) ] else [ ]) (genList (i: i) (length networks));
  defaults = concatMap (n: if n ? defaults then [ n.defaults ] else [ ]) networks;
  description = builtins.foldl' (d: n: (n.network or { }).description or d) "" networks;

  # NixOps options that only its cloud backends (or its own state) use: accepted and reported.
  cloudOptions = [ "ec2" "gce" "azure" "digitalOcean" "hetzner" "libvirtd" "virtualbox" "container" "packet" "vultr" "gcp" "route53" "autoLuks" ];
  deploymentModule = name: { config, lib, pkgs, ... }: {
    key = "nix-deploy-action#deployment";
    # As NixOps: the machine's name is its host name unless the configuration sets one (900 beats
    # lib.mkDefault, loses to a plain definition).
    config.networking.hostName = lib.mkOverride 900 name;
    config.systemd = keyUnits pkgs config.deployment.keys;
    options.deployment = {
      targetHost = lib.mkOption { type = lib.types.str; default = name; description = "Host name or address to deploy to (default: the machine's name, as in NixOps)."; };
      targetPort = lib.mkOption { type = lib.types.nullOr lib.types.int; default = null; description = "SSH port (default 22)."; };
      targetUser = lib.mkOption { type = lib.types.nullOr lib.types.str; default = null; description = "SSH user (default root)."; };
      tags = lib.mkOption { type = lib.types.listOf lib.types.str; default = [ ]; description = "Names to select machines by (the machines input's @tag), as in NixOps and colmena."; };
      targetEnv = lib.mkOption { type = lib.types.str; default = "none"; description = "NixOps backend; only \"none\" (an existing machine) is deployed as such."; };
      keys = lib.mkOption {
        default = { };
        description = "Files uploaded outside the Nix store before activation, as NixOps did.";
        type = lib.types.attrsOf (lib.types.submodule ({ name, config, ... }: {
          options = {
            text = lib.mkOption { type = lib.types.nullOr lib.types.str; default = null; };
            keyFile = lib.mkOption { type = lib.types.nullOr lib.types.path; default = null; };
            keyCommand = lib.mkOption { type = lib.types.nullOr (lib.types.listOf lib.types.str); default = null; };
            destDir = lib.mkOption { type = lib.types.str; default = "/run/keys"; };
            user = lib.mkOption { type = lib.types.str; default = "root"; };
            group = lib.mkOption { type = lib.types.str; default = "root"; };
            permissions = lib.mkOption { type = lib.types.str; default = "0600"; };
            # As NixOps': where the key is, for the services that read it.
            path = lib.mkOption { type = lib.types.str; readOnly = true; default = "${config.destDir}/${name}"; };
          };
        }));
      };
      hasFastConnection = lib.mkOption { type = lib.types.bool; default = false; };
      alwaysActivate = lib.mkOption { type = lib.types.bool; default = true; };
      storeKeysOnMachine = lib.mkOption { type = lib.types.bool; default = false; };
      owners = lib.mkOption { type = lib.types.listOf lib.types.str; default = [ ]; };
      encryptedLinksTo = lib.mkOption { type = lib.types.listOf lib.types.str; default = [ ]; };
    } // listToAttrs (map (n: { name = n; value = lib.mkOption { type = lib.types.attrs; default = { }; }; }) cloudOptions);
  };

  # As NixOps and colmena: a unit <name>-key.service per key and keys.target after them all, so a
  # service can order after its key and require it. A key in /run/keys is gone after a boot until
  # the action uploads it again: its unit waits for the file (TimeoutStartSec=infinity, a look a
  # second while it waits, nothing once it is there), and so does whatever requires it. Unlike
  # NixOps' units it does not stop when the file is deleted. Names and directories the upload would
  # refuse (deploy/deployment-keys.ts) get no unit: the deploy fails before activation anyway.
  keyUnits = pkgs: keys:
    let
      safe = k: builtins.match "[A-Za-z0-9_][A-Za-z0-9._-]*" k != null
        && builtins.match "/[A-Za-z0-9._/-]*" keys.${k}.destDir != null;
      names = filter safe (attrNames keys);
      unit = k:
        let inherit (keys.${k}) path; in {
          description = "deployment.keys.${k}: ${path} is there";
          wantedBy = [ "keys.target" ];
          before = [ "keys.target" ];
          serviceConfig = {
            Type = "oneshot";
            RemainAfterExit = true;
            TimeoutStartSec = "infinity";
            # systemd's own quoting: $$ is a dollar; the path is the script's $0.
            ExecStart = "${pkgs.runtimeShell} -c 'while [ ! -e \"$$0\" ]; do sleep 1; done' ${path}";
          };
        };
    in {
      services = listToAttrs (map (k: { name = "${k}-key"; value = unit k; }) names);
      targets = if names == [ ] then { } else { keys.description = "deployment.keys: every key is there"; };
    };

  # Each machine through eval-config.nix, as NixOps did: the machine's modules from every network
  # file, the defaults, the deployment options; name, nodes and resources as module arguments.
  nodes = listToAttrs (map (name: {
    inherit name;
    value = import (nixpkgs + "/nixos/lib/eval-config.nix") {
      system = args.system;
      modules = concatMap (n: if n ? ${name} then [ n.${name} ] else [ ]) networks ++ defaults ++ [
        (deploymentModule name)
        { _module.args = { inherit name nodes; resources = { }; }; }
      ];
    };
  }) (args.machines or [ ]));

  machine = name:
    let
      d = nodes.${name}.config.deployment;
      ignored = filter (o: d.${o} != { }) cloudOptions
        ++ (if d.targetEnv != "none" then [ "targetEnv" ] else [ ])
        ++ (if d.encryptedLinksTo != [ ] then [ "encryptedLinksTo" ] else [ ])
        ++ (if d.storeKeysOnMachine then [ "storeKeysOnMachine" ] else [ ]);
    in describe nodes.${name} // {
      inherit (d) targetHost targetPort targetUser tags;
      ignored = map (o: "deployment.${o}") ignored;
      # keyFile as a string: a path would be copied into the store by toJSON.
      keys = builtins.mapAttrs (_: k: {
        inherit (k) text keyCommand destDir user group permissions;
        keyFile = if k.keyFile == null then null else toString k.keyFile;
      }) d.keys;
    };

  configuration = describe (import (nixpkgs + "/nixos") { configuration = /. + args.configuration; system = args.system; });
in
{
  names = if resourceFiles != [ ] then { inherit resourceFiles; } else { inherit names; };
  tags = listToAttrs (map (name: { inherit name; value = nodes.${name}.config.deployment.tags; }) (args.machines or [ ]));
  result =
    if args ? configuration then { description = ""; machines."" = configuration; }
    else { inherit description; machines = listToAttrs (map (name: { inherit name; value = machine name; }) args.machines); };
}

# A NixOS module for the x86_64 machine that runs the self-hosted GitHub Actions runner on the Pi's
# LAN. Import it from that machine's configuration.nix, put a runner registration token in
# /etc/github-runner/token (root-only), and set `url` to your repository.
{ config, pkgs, ... }:
{
  # Build aarch64-linux (the Pi) through QEMU. NixOS registers the interpreter without the F flag and
  # adds it to the Nix sandbox; the action detects this registration and uses it as it is.
  boot.binfmt.emulatedSystems = [ "aarch64-linux" ];

  nix.settings = {
    experimental-features = [ "nix-command" "flakes" ];
    # The runner's user builds through the daemon; it must be trusted for the action's extra
    # platforms and options to apply.
    trusted-users = [ "root" "github-runner-pi" ];
    # Keep the store from growing without bound; the profile of each deploy stays on the Pi.
    min-free = 5 * 1024 * 1024 * 1024;
  };
  nix.gc = {
    automatic = true;
    dates = "weekly";
    options = "--delete-older-than 30d";
  };

  services.github-runners.pi = {
    enable = true;
    url = "https://github.com/OWNER/REPO";
    tokenFile = "/etc/github-runner/token";
    name = "pi-deployer";
    extraLabels = [ "nix" ];
    # The action runs nix, ssh-keygen-free ssh2 and (for binfmt: auto) nothing as root.
    extraPackages = with pkgs; [ nix zstd gzip openssh ];
  };
}

# The smallest NixOS system for a Raspberry Pi-like aarch64 board, for the CI job that runs the
# action from this repository (uses: ./) on a GitHub-hosted runner: an emulated build through QEMU
# binfmt, with everything nixpkgs has substituted from cache.nixos.org.
{
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";
  outputs = { nixpkgs, ... }: {
    nixosConfigurations.pi = nixpkgs.lib.nixosSystem {
      system = "aarch64-linux";
      modules = [{
        boot.loader.grub.enable = false;
        boot.loader.generic-extlinux-compatible.enable = true;
        fileSystems."/" = { device = "/dev/disk/by-label/NIXOS_SD"; fsType = "ext4"; };
        documentation.enable = false;
        system.stateVersion = "25.05";
      }];
    };
  };
}

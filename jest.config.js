// Three projects (stress only through `npm run stress`): `unit` (pure logic, runs anywhere) and `e2e` (real Nix, QEMU, sshd in network
// namespaces; needs root and the testbed from scripts/testbed.sh). e2e tests share global state
// (namespaces, the runner's store, binfmt), so the whole suite runs with --runInBand.
const common = {
  preset: 'ts-jest',
  testEnvironment: 'node',
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.json' }] }
}
module.exports = {
  projects: [
    { ...common, displayName: 'unit', testMatch: ['<rootDir>/__tests__/unit/**/*.test.ts'] },
    { ...common, displayName: 'e2e', testMatch: ['<rootDir>/__tests__/e2e/**/*.test.ts'] },
    // The safety, rollback, deploy and faults suites again, on the Pi with systemd as PID 1, logind and Nix 2.26
    // (harness MAIN_PI); the other suites run on pi and pi2 (no init system: the agent's setsid path).
    {
      ...common,
      displayName: 'e2e-spi',
      globals: { NDA_E2E_PI: 'spi' },
      testMatch: ['safety', 'rollback', 'deploy', 'faults'].map(f => `<rootDir>/__tests__/e2e/${f}.test.ts`)
    },
    // The deploy, PR, network, cache and bad-input suites again with the runner on Nix 2.26: a nix-daemon with its
    // sandbox on, the action run by an unprivileged trusted user (harness RUNNER_NIX, testbed/modern-nix.sh).
    {
      ...common,
      displayName: 'e2e-modern',
      globals: { NDA_E2E_NIX: 'modern' },
      testMatch: ['deploy', 'pr-flow', 'network', 'cache', 'bad-input'].map(f => `<rootDir>/__tests__/e2e/${f}.test.ts`)
    },
    // npm run stress only (long): scripts/test.sh selects unit and e2e.
    { ...common, displayName: 'stress', testMatch: ['<rootDir>/__tests__/stress/**/*.test.ts'] }
  ]
}

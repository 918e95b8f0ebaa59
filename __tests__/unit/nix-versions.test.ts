import { parsePathInfoJson } from '../../src/nix/closure'
import {
  parseConfiguredPlatforms,
  parseStoreInfo,
  parseIgnoredSettings,
  untrustedEmulationError
} from '../../src/nix/daemon'
import { failedDerivation } from '../../src/nix/nix'

/**
 * What the runner's Nix prints, as Debian's Nix 2.8 (bookworm) and Nix 2.26 (trixie, with a
 * nix-daemon) printed it on the testbed: each parser reads both (issue #20). Samples are verbatim
 * but for the settings' long `description` strings, shortened.
 */
const BUSYBOX = '/nix/store/78nkgzxw2azmvycap5v40ykl02r2ii7n-busybox-static-aarch64'

describe('nix path-info --json, as each version prints it', () => {
  const nix28 = `[{"path":"${BUSYBOX}","narHash":"sha256-Dc5scdx4xI9pFy6FKivL46UoRjMgAMlGuC8uY9AFftc=","narSize":1847216,"references":[],"ca":"fixed:r:sha256:1mvy0p866bigp13cj0106d32i9g3rcmjm19f2xlqzi3qviqnrkhd","registrationTime":1796039886}]`
  const nix226 = `{"${BUSYBOX}":{"ca":"fixed:r:sha256:1mvy0p866bigp13cj0106d32i9g3rcmjm19f2xlqzi3qviqnrkhd","deriver":null,"narHash":"sha256-Dc5scdx4xI9pFy6FKivL46UoRjMgAMlGuC8uY9AFftc=","narSize":1847216,"references":[],"registrationTime":1796039886,"signatures":[],"ultimate":false}}`
  it('reads the same path, size and references from both', () => {
    const expected = [{ path: BUSYBOX, narSize: 1847216, references: [] }]
    expect(parsePathInfoJson(nix28)).toMatchObject(expected)
    expect(parsePathInfoJson(nix226)).toMatchObject(expected)
  })
})

describe('nix store info --json (the store and its trust in this user)', () => {
  it('reads Nix 2.26 for a trusted and an untrusted user of its daemon', () => {
    expect(parseStoreInfo('{"trusted":1,"url":"daemon","version":"2.26.3"}')).toEqual({
      url: 'daemon',
      version: '2.26.3',
      trusted: true
    })
    expect(parseStoreInfo('{"trusted":0,"url":"daemon","version":"2.26.3"}')?.trusted).toBe(false)
  })
  it('says nothing of trust where the store does not (a local store, or Nix 2.8, which has no --json here)', () => {
    expect(parseStoreInfo('{"url":"local"}')).toEqual({
      url: 'local',
      version: undefined,
      trusted: undefined
    })
    // Nix 2.8: `nix store ping` prints text; `--json` is an unrecognised flag (exit 1, nothing on stdout).
    expect(parseStoreInfo('Store URL: local\n')).toBeUndefined()
    expect(parseStoreInfo('')).toBeUndefined()
  })
})

describe('nix config show --json / nix show-config --json', () => {
  const setting = (value: unknown, extra: Record<string, unknown> = {}) => ({
    aliases: [],
    defaultValue: value,
    description: '\nPlatforms other than the native one … (shortened)\n',
    documentDefault: false,
    ...extra,
    value
  })
  const defaults = ['i686-linux', 'x86_64-v1-linux', 'x86_64-v2-linux', 'x86_64-v3-linux', 'x86_64-v4-linux']
  // 2.26 adds experimentalFeature to every setting; otherwise the same shape as 2.8.
  const nix28 = JSON.stringify({ 'extra-platforms': setting(defaults), system: setting('x86_64-linux') })
  const nix226 = JSON.stringify({
    'extra-platforms': setting([...defaults, 'aarch64-linux'], { experimentalFeature: null }),
    system: setting('x86_64-linux', { experimentalFeature: null })
  })
  it('reads the system and extra-platforms of both', () => {
    expect(parseConfiguredPlatforms(nix28)).toEqual({ system: 'x86_64-linux', extraPlatforms: defaults })
    expect(parseConfiguredPlatforms(nix226)?.extraPlatforms).toContain('aarch64-linux')
  })
  it('is undefined for anything else', () => {
    expect(parseConfiguredPlatforms("error: 'config' is not a recognised command")).toBeUndefined()
    expect(parseConfiguredPlatforms('{}')).toBeUndefined()
  })
})

describe('an emulated build through a daemon that may not trust this user', () => {
  const configured = { system: 'x86_64-linux', extraPlatforms: ['i686-linux'] }
  const untrusted = { url: 'daemon', version: '2.26.3', trusted: false }
  it('fails before the build, naming the ignored setting, where to set it, and the other way out', () => {
    const e = untrustedEmulationError('aarch64-linux', untrusted, configured, 'runner')
    expect(e?.message).toBe(
      "the nix-daemon (Nix 2.26.3) will not build aarch64-linux: runner is not in its trusted-users, so it ignores the action's extra-platforms = aarch64-linux, and its nix.conf does not list aarch64-linux in extra-platforms"
    )
    expect(e?.hint).toMatch(
      /^Add "extra-platforms = aarch64-linux" to the daemon's nix.conf .*extra_nix_config.*extra-conf.*add runner to trusted-users/
    )
    expect(e?.phase).toBe('build')
  })
  it('lets the build go on when the daemon lists the platform itself, trusts the user, or cannot say', () => {
    const listed = { ...configured, extraPlatforms: ['i686-linux', 'aarch64-linux'] }
    expect(untrustedEmulationError('aarch64-linux', untrusted, listed, 'runner')).toBeUndefined()
    expect(
      untrustedEmulationError('aarch64-linux', { ...untrusted, trusted: true }, configured, 'runner')
    ).toBeUndefined()
    expect(untrustedEmulationError('aarch64-linux', { url: 'local' }, configured, 'runner')).toBeUndefined()
    expect(untrustedEmulationError('aarch64-linux', undefined, configured, 'runner')).toBeUndefined()
    expect(untrustedEmulationError('aarch64-linux', untrusted, undefined, 'runner')).toBeUndefined()
  })
})

describe('client settings a daemon that does not trust this user ignores, as Nix 2.26 says on stderr', () => {
  const nix226 = [
    "warning: ignoring the client-specified setting 'keep-outputs', because it is a restricted setting and you are not a trusted user",
    "warning: ignoring the client-specified setting 'sandbox', because it is a restricted setting and you are not a trusted user",
    "warning: ignoring untrusted substituter 'file:///tmp', you are not a trusted user.",
    'Run `man nix.conf` for more information on the `substituters` configuration option.',
    "warning: ignoring the client-specified setting 'keep-outputs', because it is a restricted setting and you are not a trusted user"
  ].join('\n')
  it('names each setting and substituter once', () => {
    expect(parseIgnoredSettings(nix226)).toEqual({
      settings: ['keep-outputs', 'sandbox'],
      substituters: ['file:///tmp']
    })
  })
  it('finds nothing where nothing was ignored (a trusted user, or a daemon that does not say)', () => {
    expect(parseIgnoredSettings("warning: unknown setting 'poll-interval'\n")).toEqual({
      settings: [],
      substituters: []
    })
  })
})

describe("a builder's failure, as each version reports it", () => {
  const drv = '/nix/store/xy47kn1cmb6fmwv1rx78n6wpn1bj3z5l-mx-fail-30934.drv'
  it('finds the failed derivation in both', () => {
    const nix28 = `building '${drv}'...\nfailing on purpose\nerror: builder for '${drv}' failed with exit code 3\n`
    const nix226 = `building '${drv}'...\nfailing on purpose\nerror: builder for '${drv}' failed with exit code 3;\n       last 1 log lines:\n       > failing on purpose\n       For full logs, run:\n         nix log ${drv}\n`
    expect(failedDerivation(nix28)).toBe(drv)
    expect(failedDerivation(nix226)).toBe(drv)
  })
})

import { diffClosures, parseClosureListing, parseDryActivate, parseName } from '../../src/report/diff'
import { renderDiff } from '../../src/report/summary'

const P = (name: string, c = 'a') => `/nix/store/${c.repeat(32)}-${name}`

describe('parseName (store path names to package and version)', () => {
  it.each([
    ['hello-2.12.1', 'hello', '2.12.1'],
    ['python3.11-requests-2.31.0', 'python3.11-requests', '2.31.0'],
    ['util-linux-2.39.2-bin', 'util-linux', '2.39.2'],
    ['openssh-9.6p1', 'openssh', '9.6p1'],
    ['linux-6.1.55-modules', 'linux', '6.1.55'],
    ['nixos-system-pi3-24.05.20240101.abcdef0', 'nixos-system-pi3', '24.05.20240101.abcdef0'],
    ['glibc-2.38-44', 'glibc', '2.38-44'],
    ['perl5.38.0-Net-SSLeay-1.92', 'perl5.38.0-Net-SSLeay', '1.92'],
    ['etc', 'etc', ''],
    ['system-path', 'system-path', ''],
    ['unit-script-nixos-activation-start', 'unit-script-nixos-activation-start', ''],
    ['source', 'source', ''],
    ['X-Restart-Triggers-sshd', 'X-Restart-Triggers-sshd', ''],
    ['firmware-raspberrypi-1.20230405', 'firmware-raspberrypi', '1.20230405'],
    ['2ad4xyz-vendor', '2ad4xyz-vendor', '']
  ])('%s -> %s %s', (name, pname, version) => {
    expect(parseName(name)).toEqual({ pname, version })
  })
})

describe('diffClosures', () => {
  const before = [
    { path: P('hello-2.12', 'a'), narSize: 100 },
    { path: P('openssl-3.0.12', 'b'), narSize: 1000 },
    { path: P('openssl-3.0.12-bin', 'c'), narSize: 10 },
    { path: P('nano-7.2', 'd'), narSize: 50 },
    { path: P('etc', 'f'), narSize: 5 }
  ]
  const after = [
    { path: P('hello-2.12.1', 'g'), narSize: 110 },
    { path: P('openssl-3.0.12', 'b'), narSize: 1000 },
    { path: P('openssl-3.0.12-bin', 'c'), narSize: 10 },
    { path: P('htop-3.3.0', 'h'), narSize: 70 },
    { path: P('etc', 'i'), narSize: 6 }
  ]
  const d = diffClosures(before, after)
  it('finds version changes, additions and removals, by package name', () => {
    expect(d.changed).toEqual([{ pname: 'hello', before: ['2.12'], after: ['2.12.1'] }])
    expect(d.added).toEqual([{ pname: 'htop', versions: ['3.3.0'] }])
    expect(d.removed).toEqual([{ pname: 'nano', versions: ['7.2'] }])
    expect(d.otherPathsChanged).toBe(2)
    expect([d.sizeBefore, d.sizeAfter]).toEqual([1165, 1196])
  })
  it('treats several versions of one package as a set', () => {
    const x = diffClosures(
      [{ path: P('zlib-1.2.13', 'a') }],
      [{ path: P('zlib-1.2.13', 'a') }, { path: P('zlib-1.3', 'b') }]
    )
    expect(x.changed).toEqual([{ pname: 'zlib', before: ['1.2.13'], after: ['1.2.13', '1.3'] }])
    expect(x.sizeBefore).toBeUndefined()
  })
  it('renders a table and a size line, escaping names', () => {
    const md = renderDiff(
      diffClosures(
        [{ path: P('a-1', 'a'), narSize: 1 }],
        [
          { path: P('a-2', 'b'), narSize: 1 },
          { path: P('b<i>-1', 'c'), narSize: 2048 }
        ]
      ),
      'pi <x>'
    ).join('\n')
    expect(md).toContain('#### Changes against pi &#60;x&#62;')
    expect(md).toContain('| ↕ | a | 1 | 2 |')
    expect(md).toContain('| + | b&#60;i&#62; | | 1 |')
    expect(md).toMatch(
      /1 changed, 1 added, 0 removed; 0 other paths .* 1 → 2 paths; closure 1 B → 2.0 KiB \(\+2.0 KiB\)/
    )
    expect(renderDiff(diffClosures([], []), 'x').join('\n')).toContain('No package versions change.')
  })
})

describe('listings and dry-activate output', () => {
  it('pairs paths with sizes only when the counts agree', () => {
    expect(parseClosureListing(`${P('a-1')}\n${P('b-1', 'b')}\n`, '10\n20\n')).toEqual([
      { path: P('a-1'), narSize: 10 },
      { path: P('b-1', 'b'), narSize: 20 }
    ])
    expect(parseClosureListing(`${P('a-1')}\n`, '10\n20\n')[0].narSize).toBeUndefined()
  })
  it('reads what NixOS switch-to-configuration dry-activate says', () => {
    const out = [
      'would stop the following units: old.service',
      'would NOT stop the following changed units: getty@tty1.service',
      'would activate the configuration...',
      'would restart the following units: sshd.service, nginx.service',
      'would reload the following units: dbus.service',
      'would start the following units: new.service',
      'would restart the following user units: pipewire.service'
    ].join('\n')
    expect(parseDryActivate(out)).toEqual([
      { action: 'stop', units: ['old.service'] },
      { action: 'keep running (changed)', units: ['getty@tty1.service'] },
      { action: 'restart', units: ['sshd.service', 'nginx.service'] },
      { action: 'reload', units: ['dbus.service'] },
      { action: 'start', units: ['new.service'] },
      { action: 'restart (user)', units: ['pipewire.service'] }
    ])
  })
})

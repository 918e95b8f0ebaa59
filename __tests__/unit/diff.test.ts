import { diffClosures, parseDryActivate, parseName } from '../../src/report/diff'
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
    expect(d.otherPaths).toEqual([
      { change: '−', name: 'etc', narSize: 5 },
      { change: '+', name: 'etc', narSize: 6 }
    ])
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

describe('the system itself and the other paths', () => {
  const big = 300 * 1024
  const before = [
    { path: P('nixos-system-base-25.05', 'a'), narSize: 10 },
    { path: P('hello-2.12', 'b'), narSize: 100 },
    { path: P('etc', 'c'), narSize: big },
    { path: P('unit-sshd.service', 'd'), narSize: 500 }
  ]
  const after = [
    { path: P('nixos-system-kitchen-25.05', 'e'), narSize: 10 },
    { path: P('hello-2.12', 'b'), narSize: 100 },
    { path: P('etc', 'f'), narSize: big + 1 },
    { path: P('unit-sshd.service', 'g'), narSize: 600 },
    { path: P('unit-kitchen.service', 'h'), narSize: 700 }
  ]
  const tops = { before: before[0].path, after: after[0].path }

  it('shows the toplevel once, as the system change, never as a package added and removed', () => {
    const d = diffClosures(before, after, tops)
    expect(d.system).toEqual(tops)
    expect(d.added).toEqual([])
    expect(d.removed).toEqual([])
    const md = renderDiff(d, 'what target root@10.99.2.2 runs').join('\n')
    expect(md).toContain('#### Changes against what target <code>root@10.99.2.2</code> runs')
    expect(md).toContain(
      `System: <code>nixos-system-base-25.05 (${'a'.repeat(8)})</code> → <code>nixos-system-kitchen-25.05 (${'e'.repeat(8)})</code>`
    )
    expect(md).toContain('No package versions change.')
    expect(md).not.toMatch(/\| [+−] \| nixos-system/)
    // Without knowing the toplevels, the old behaviour: they look like packages.
    expect(diffClosures(before, after).added.map(a => a.pname)).toEqual(['nixos-system-kitchen'])
  })

  it('lists the other paths that differ by name, in a collapsed block, with the sizes of large ones', () => {
    const md = renderDiff(diffClosures(before, after, tops), 'x').join('\n')
    expect(md).toContain('0 changed, 0 added, 0 removed; 5 other paths (configuration, units) differ')
    const block = md.slice(md.indexOf('<details><summary>The 5 other paths (configuration, units)</summary>'))
    expect(block.split('\n').filter(l => /^\| [+−] \|/.test(l))).toEqual([
      '| − | etc | 300.0 KiB |',
      '| + | etc | 300.0 KiB |',
      '| + | unit-kitchen.service |  |',
      '| − | unit-sshd.service |  |',
      '| + | unit-sshd.service |  |'
    ])
    expect(block).toContain('</details>')
  })

  it('caps the list, saying how many more', () => {
    const many = Array.from({ length: 250 }, (_, n) => ({
      path: P(`unit-u${String(n).padStart(3, '0')}`, 'x')
    }))
    const md = renderDiff(diffClosures([], many), 'x').join('\n')
    expect(md).toContain('| + | unit-u199 |  |')
    expect(md).not.toContain('unit-u200')
    expect(md).toContain('| | … and 50 more | |')
  })
})

describe('dry-activate output', () => {
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

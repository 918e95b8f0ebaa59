import cmark from 'cmark-gfm'
import { DeployReport } from '../../src/report/report'
import { renderSummary } from '../../src/report/summary'

// The job summary as GitHub renders it: cmark-gfm (GitHub's parser) with its extensions and
// footnotes; raw HTML is kept here, GitHub sanitizes it afterwards (a link it keeps).
const GFM = {
  extensions: { table: true, strikethrough: true, autolink: true, tagfilter: true, tasklist: true },
  footnotes: true,
  unsafe: true
}
const render = (r: DeployReport): string => cmark.renderHtmlSync(renderSummary(r), GFM)

/** cmark-gfm escapes `<` in text and in attribute values: every `<` in its HTML starts a tag. */
const tags = (html: string): string[] => html.match(/<[^>]*>/g) ?? []
const links = (html: string): string[] => tags(html).filter(t => /^<(a|img)\b|\b(href|src)=|mailto:/i.test(t))
/** The tags the action writes (attributes: only details' open); any other came from outside. */
const OWN =
  /^<\/?(h3|h4|p|strong|blockquote|table|thead|tbody|tr|th|td|code|span|br|pre|details|summary)( open)?>$/
const foreignTags = (html: string): string[] => tags(html).filter(t => !OWN.test(t))

const ENTITIES: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"' }
/** What a reader sees: the HTML's text, <br> as a line break. */
function visible(html: string): string {
  return html
    .replace(/<br>/g, '\n')
    .replace(/<[^>]*>/g, '')
    .replace(/&(?:#(\d+)|#x([0-9a-f]+)|(lt|gt|amp|quot));/gi, (_, dec, hex, name) =>
      name ? ENTITIES[name] : String.fromCodePoint(parseInt(dec ?? hex, dec ? 10 : 16))
    )
}

/** Markdown that makes links, images, mailto:, footnotes or markup unless it is escaped. */
const HOSTILE = [
  '[click](https://evil.example/a) ![x](https://evil.example/a.png) <https://evil.example/b>',
  'https://evil.example/c www.evil.example user@host.example mailto:user@host.example a_@b.example',
  '<img src=x> <a href="https://evil.example/d">d</a> <script>alert(1)</script>',
  '[ref] [ref][] note[^1] &lt;a href&gt; &amp; \\[x\\](https://evil.example/g) `code` | a | ~~s~~ *e* _e_ \\',
  '[ref]: https://evil.example/e',
  '',
  '[^1]: https://evil.example/f',
  '# heading',
  '- [ ] task'
].join('\n')
const hostile = (field: string): string => `${field}: ${HOSTILE}`

const P = (name: string): string => `/nix/store/${'a'.repeat(32)}-${name}`

/** A run as the action reports one: no link, image or mailto: of its own. */
const TYPICAL: DeployReport = {
  result: 'deployed',
  mode: 'switch',
  flake: 'github:me/pis#nixosConfigurations.kitchen',
  host: 'root@pi.lan',
  storePath: P('nixos-system-kitchen-25.05'),
  previousStorePath: P('nixos-system-kitchen-24.11'),
  changed: true,
  generation: 4,
  closureSize: 1 << 30,
  closurePaths: 900,
  copiedBytes: 1 << 20,
  copiedPaths: 3,
  wireBytes: 1 << 19,
  compression: 'zstd',
  healthChecks: 'health checks passed on attempt 1',
  confirmed: 'over a new connection',
  diffBaseline: 'what target root@pi.lan runs',
  diff: {
    added: [{ pname: 'htop', versions: ['3.3.0'] }],
    removed: [],
    changed: [{ pname: 'hello', before: ['2.12'], after: ['2.12.1'] }],
    pathsBefore: 10,
    pathsAfter: 11,
    otherPathsChanged: 1,
    otherPaths: [{ change: '+', name: 'unit-kitchen.service' }],
    system: { before: P('nixos-system-kitchen-24.11'), after: P('nixos-system-kitchen-25.05') }
  },
  activationLog: 'activating the configuration...\nsetting up /etc...',
  timings: [{ phase: 'build', ms: 1500 }],
  warnings: ['deploy@my-pi.example.com has 1 GiB free on /boot']
}

/** One machine, every field that can hold text from outside the action holding HOSTILE. */
const ONE_FIELDS = [
  'flake',
  'machine',
  'tag',
  'storePath',
  'previousStorePath',
  'rolledBackTo',
  'platform',
  'binfmt',
  'healthChecks',
  'confirmed',
  'compression',
  'cache key',
  'activationLog',
  'system before',
  'system after',
  'pname',
  'version before',
  'version after',
  'added',
  'added version',
  'removed',
  'removed version',
  'other path',
  'dry-activate action',
  'unit',
  'warning',
  'message',
  'hint',
  'details'
]
const ONE: DeployReport = {
  result: 'failed',
  mode: 'switch',
  flake: hostile('flake'),
  machine: hostile('machine'),
  tags: [hostile('tag')],
  host: 'deploy@my-pi.example.com',
  storePath: hostile('storePath'),
  previousStorePath: hostile('previousStorePath'),
  rolledBackTo: hostile('rolledBackTo'),
  platform: hostile('platform'),
  binfmt: hostile('binfmt'),
  healthChecks: hostile('healthChecks'),
  confirmed: hostile('confirmed'),
  copiedBytes: 1,
  compression: hostile('compression'),
  cache: { available: true, hit: true, key: hostile('cache key'), paths: 1, bytes: 1, ms: 1 },
  activationLog: hostile('activationLog'),
  diffBaseline: 'what target deploy@my-pi.example.com runs',
  diff: {
    added: [{ pname: hostile('added'), versions: [hostile('added version')] }],
    removed: [{ pname: hostile('removed'), versions: [hostile('removed version')] }],
    changed: [
      { pname: hostile('pname'), before: [hostile('version before')], after: [hostile('version after')] }
    ],
    pathsBefore: 1,
    pathsAfter: 2,
    otherPathsChanged: 1,
    otherPaths: [{ change: '+', name: hostile('other path') }],
    system: { before: hostile('system before'), after: hostile('system after') }
  },
  dryActivate: [{ action: hostile('dry-activate action'), units: [hostile('unit')] }],
  timings: [{ phase: 'build', ms: 1 }],
  // A warning's text starts a line (after `> `): a heading or a list there too.
  warnings: [hostile('warning'), `# ${hostile('warning')}`, `1. ${hostile('warning')}`],
  error: { message: hostile('message'), hint: hostile('hint'), phase: 'build', details: hostile('details') }
}

/** Several machines: names, tags, rollback-fleet's text and the run's own warnings too. */
const FLEET_FIELDS = [
  'fleet warning',
  'machine A',
  'machine B',
  'tag B',
  'fleetRollback B',
  'rolledBackTo B',
  'machine C',
  'failureRolledBack C'
]
const FLEET: DeployReport = {
  result: 'failed',
  builtDerivations: 1,
  timings: [],
  warnings: [hostile('fleet warning')],
  hosts: [
    { machine: hostile('machine A'), report: ONE },
    {
      machine: hostile('machine B'),
      report: {
        result: 'rolled-back',
        host: 'root@pi.lan',
        tags: [hostile('tag B')],
        rolledBackTo: hostile('rolledBackTo B'),
        fleetRollback: hostile('fleetRollback B'),
        storePath: P('nixos-system-b'),
        timings: [],
        warnings: []
      }
    },
    {
      // Its own deploy failed after its activation, and rollback-fleet put it back.
      machine: hostile('machine C'),
      report: {
        result: 'rolled-back',
        host: 'root@pi.lan',
        rolledBackTo: P('nixos-system-c-before'),
        failureRolledBack: hostile('failureRolledBack C'),
        error: { message: 'lost the SSH connection', hint: 'Check the link.', phase: 'verify' },
        timings: [],
        warnings: []
      }
    }
  ]
}

describe('the job summary as GitHub renders it (cmark-gfm)', () => {
  it('has no link, image or mailto: of the action (it puts none there), hosts shown as they are', () => {
    const html = render(TYPICAL)
    expect(links(html)).toEqual([])
    expect(foreignTags(html)).toEqual([])
    const seen = visible(html)
    expect(html).toContain('<td>Host</td>\n<td><code>')
    expect(seen).toContain('Host\nroot@pi.lan\n')
    expect(seen).toContain('Changes against what target root@pi.lan runs')
    expect(seen).toContain('deploy@my-pi.example.com has 1 GiB free')
    expect(seen).toContain('github:me/pis#nixosConfigurations.kitchen')
  })

  it.each([
    [
      'one machine',
      ONE,
      ONE_FIELDS,
      ['deploy@my-pi.example.com', 'what target deploy@my-pi.example.com runs']
    ],
    ['several machines', FLEET, [...ONE_FIELDS, ...FLEET_FIELDS], ['root@pi.lan', 'deploy@my-pi.example.com']]
  ])('%s: text from outside is text, no link, image, mailto: or markup', (_, report, fields, hosts) => {
    const html = render(report)
    expect(links(html)).toEqual([])
    expect(foreignTags(html)).toEqual([])
    // Escaped, not deleted: every field's text reads as it was written.
    const seen = visible(html)
    for (const f of fields) expect(seen).toContain(hostile(f))
    for (const f of ['# warning', '1. warning']) expect(seen).toContain(`${f}: ${HOSTILE}`)
    for (const h of hosts) expect(seen).toContain(h)
  })
})

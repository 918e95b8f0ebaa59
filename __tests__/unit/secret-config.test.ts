import { maskSecret, scrubSecrets } from '../../src/secrets'
import { runCommand, userConfFilesWithSecret } from '../../src/run-command'
import { githubAccessConfig, githubHost } from '../../src/nix/flake'
import { base, inputs } from './read-inputs'

describe('github-token for the runner’s Nix', () => {
  it('keys the token for github.com and the hosts the action’s own github: references name', () => {
    expect(githubHost('github:me/pi/main#pi3')).toBe('github.com')
    expect(githubHost('github:me/pi?host=ghe.example.org&dir=x#pi3')).toBe('ghe.example.org')
    expect(githubHost('path:/x?host=evil.example')).toBeUndefined()
    expect(githubAccessConfig('ghs_abc', ['.', 'github:o/r?host=ghe.example.org#pi3', 'github:o/r#x'])).toBe(
      'access-tokens = github.com=ghs_abc ghe.example.org=ghs_abc\n'
    )
    // A host that is not a plain name never becomes part of the setting.
    expect(githubAccessConfig('t', ['github:o/r?host=a%20b=c#x'])).toBe('access-tokens = github.com=t\n')
  })

  it('refuses a token that could add settings of its own', () => {
    expect(() => inputs({ ...base, 'github-token': 'ghs_x\nsubstituters = https://evil' })).toThrow(
      /github-token: not a GitHub token/
    )
    expect(inputs({ ...base, 'github-token': 'ghs_A1.b-c' }).githubToken).toBe('ghs_A1.b-c')
    expect(inputs(base).githubToken).toBeUndefined()
    // action.yml's default as written, where nothing evaluates it (a local run): no token.
    expect(inputs({ ...base, 'github-token': '${{ github.token }}' }).githubToken).toBeUndefined()
  })

  it('puts the secret configuration first and keeps the user’s own files', () => {
    expect(userConfFilesWithSecret({ HOME: '/home/r' })).toBe(
      '/dev/fd/3:/home/r/.config/nix/nix.conf:/etc/xdg/nix/nix.conf'
    )
    expect(userConfFilesWithSecret({ NIX_USER_CONF_FILES: '/a.conf:/b.conf' })).toBe(
      '/dev/fd/3:/a.conf:/b.conf'
    )
    expect(userConfFilesWithSecret({ XDG_CONFIG_HOME: '/x', XDG_CONFIG_DIRS: '/d1:/d2' })).toBe(
      '/dev/fd/3:/x/nix/nix.conf:/d1/nix/nix.conf:/d2/nix/nix.conf'
    )
  })

  it('a real child reads the secret from /dev/fd/3 (a pipe), and it is in neither its argv nor its environment', async () => {
    const secret = 'access-tokens = github.com=ghs_SECRETVALUE\n'
    const r = await runCommand(
      'sh',
      [
        '-c',
        'printf "fd3=%s\\n" "$(cat /dev/fd/3)"; printf "stdin=%s\\n" "$(cat)"; echo "conf=$NIX_USER_CONF_FILES"; ' +
          'tr "\\0" "\\n" < /proc/$$/environ | grep -c SECRET""VALUE; tr "\\0" " " < /proc/$$/cmdline | grep -c SECRET""VALUE; true'
      ],
      { secretNixConfig: secret, input: 'the stdin' }
    )
    expect(r.exitCode).toBe(0)
    const lines = r.stdout.trim().split('\n')
    expect(lines.slice(0, 2)).toEqual(['fd3=access-tokens = github.com=ghs_SECRETVALUE', 'stdin=the stdin'])
    expect(lines[2]).toMatch(/^conf=\/dev\/fd\/3(:|$)/)
    // grep -c: 0 matches in the environment and in argv.
    expect(lines.slice(3)).toEqual(['0', '0'])
  })
})

describe('scrubSecrets (the summary and outputs, which the runner does not mask)', () => {
  it('replaces every masked value, whole and line by line, and leaves short lines alone', () => {
    maskSecret('ghs_tokenvalue123')
    maskSecret('-----BEGIN KEY-----\nAAAAline1AAAA\n}\n-----END KEY-----')
    expect(scrubSecrets("hash 'ghs_tokenvalue123' has wrong length")).toBe("hash '***' has wrong length")
    expect(scrubSecrets('saw AAAAline1AAAA and }')).toBe('saw *** and }')
  })
})

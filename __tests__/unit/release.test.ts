import { spawnSync } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'

/**
 * scripts/release.sh in a throwaway repository: the checks before a release, the version commit,
 * the version tag with its CHANGELOG section, and the major tag moved to it. (Its dist/ check is
 * scripts/check-dist.js, which the dist test runs on this repository.)
 */
const root = path.join(__dirname, '..', '..')

describe('scripts/release.sh', () => {
  let repo: string
  const run = (cmd: string, args: string[], env: Record<string, string> = {}) =>
    spawnSync(cmd, args, {
      cwd: repo,
      encoding: 'utf8',
      env: {
        ...process.env,
        NDA_RELEASE_SKIP_DIST_CHECK: '1',
        GIT_AUTHOR_NAME: 't',
        GIT_AUTHOR_EMAIL: 't@example.org',
        GIT_COMMITTER_NAME: 't',
        GIT_COMMITTER_EMAIL: 't@example.org',
        ...env
      }
    })
  const git = (...args: string[]): string => run('git', args).stdout.trim()
  const release = (version: string) => run('bash', ['scripts/release.sh', version])
  const changelog = (sections: string): void => {
    fs.writeFileSync(path.join(repo, 'CHANGELOG.md'), `# Changelog\n\n${sections}`)
    git('commit', '-qam', 'changelog')
  }

  beforeEach(() => {
    repo = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-release-'))
    fs.mkdirSync(path.join(repo, 'scripts'))
    for (const f of ['release.sh', 'release-notes.js'])
      fs.copyFileSync(path.join(root, 'scripts', f), path.join(repo, 'scripts', f))
    const pkg = { name: 'nix-deploy-action', version: '0.1.0', private: true }
    fs.writeFileSync(path.join(repo, 'package.json'), JSON.stringify(pkg, null, 2) + '\n')
    fs.writeFileSync(
      path.join(repo, 'package-lock.json'),
      JSON.stringify(
        { name: pkg.name, version: '0.1.0', lockfileVersion: 3, packages: { '': pkg } },
        null,
        2
      ) + '\n'
    )
    fs.writeFileSync(path.join(repo, 'CHANGELOG.md'), '# Changelog\n\n## [Unreleased]\n\n- a change\n')
    git('init', '-q', '-b', 'main')
    git('add', '-A')
    git('commit', '-qm', 'start')
  })
  afterEach(() => fs.rmSync(repo, { recursive: true, force: true }))

  it('commits the version, tags it with its CHANGELOG section and moves the major tag', () => {
    changelog('## [1.0.0]\n\n- the first release\n\n## [0.1.0]\n\n- before\n')
    const r = release('1.0.0')
    expect(r.stderr).toBe('')
    expect(r.status).toBe(0)
    expect(r.stdout).toContain('git push --force origin v1')
    expect(git('log', '-1', '--format=%s')).toBe('Release v1.0.0')
    expect(JSON.parse(fs.readFileSync(path.join(repo, 'package.json'), 'utf8')).version).toBe('1.0.0')
    expect(JSON.parse(fs.readFileSync(path.join(repo, 'package-lock.json'), 'utf8')).version).toBe('1.0.0')
    const head = git('rev-parse', 'HEAD')
    expect([git('rev-parse', 'v1.0.0^{commit}'), git('rev-parse', 'v1^{commit}')]).toEqual([head, head])
    expect(git('tag', '-l', '--format=%(contents)', 'v1.0.0')).toBe('v1.0.0\n\n- the first release')

    // The next minor release moves v1 along.
    changelog('## [1.1.0]\n\n- more\n\n## [1.0.0]\n\n- the first release\n')
    expect(release('1.1.0').status).toBe(0)
    expect(git('rev-parse', 'v1^{commit}')).toBe(git('rev-parse', 'HEAD'))
    expect(git('rev-parse', 'v1.0.0^{commit}')).toBe(head)
  })

  it.each([
    ['1.0', '', /usage: scripts\/release\.sh X\.Y\.Z/],
    ['0.1.0', '## [0.1.0]\n\n- x\n', /0\.1\.0 is not newer than package\.json's 0\.1\.0/],
    ['0.0.9', '## [0.0.9]\n\n- x\n', /0\.0\.9 is not newer/],
    ['1.0.0', '## [Unreleased]\n\n- x\n', /entries under '## \[1\.0\.0\]' in CHANGELOG\.md/],
    ['1.0.0', '## [1.0.0]\n\n## [0.1.0]\n- x\n', /entries under '## \[1\.0\.0\]'/]
  ])('refuses %s with the CHANGELOG %j, changing nothing', (version, sections, why) => {
    if (sections) changelog(sections)
    const before = git('rev-parse', 'HEAD')
    const r = release(version)
    expect(r.status).not.toBe(0)
    expect(r.stderr).toMatch(why)
    expect([git('rev-parse', 'HEAD'), git('tag')]).toEqual([before, ''])
  })

  it('refuses a dirty work tree, another branch, and a version tagged already', () => {
    changelog('## [1.0.0]\n\n- x\n')
    fs.writeFileSync(path.join(repo, 'stray'), 'x')
    expect(release('1.0.0').stderr).toMatch(/the work tree has changes/)
    fs.rmSync(path.join(repo, 'stray'))
    git('checkout', '-qb', 'topic')
    expect(release('1.0.0').stderr).toMatch(/releases are cut from main \(this is topic\)/)
    git('checkout', '-q', 'main')
    git('tag', 'v1.0.0')
    expect(release('1.0.0').stderr).toMatch(/v1\.0\.0 is tagged already/)
  })
})

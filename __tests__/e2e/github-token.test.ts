import * as fs from 'fs'
import { deployInputs, describeE2E, fixturePath, runAction } from './harness'
import { GitHubStandIn } from './github-service'

/**
 * github-token: diff-against a github: flake of a private repository, fetched for real by the
 * runner's Nix from a stand-in for GitHub's API that answers only with the token (as GitHub does
 * for a private repository). The token reaches Nix on a pipe: while the action runs, no other
 * process has it in its argv or environment.
 */
describeE2E(
  'github-token: the runner’s Nix fetches a private github: flake with it, and nothing else sees it',
  () => {
    const github = new GitHubStandIn()
    // Nix caches what it fetched by URL (the fetcher cache outlives a test run): names of this run's own.
    const repoA = `private-a-${github.sha.slice(0, 8)}`
    const repoB = `private-b-${github.sha.slice(0, 8)}`
    beforeAll(async () => {
      for (const c of ['pi-gen0', 'pi-gen1']) fixturePath(c)
      await github.start()
    }, 300_000)
    afterAll(() => github.stop())

    /** The processes (other than the action's own) whose argv or environment hold `secret`, and how many Nix calls with the secret pipe were seen. */
    function watchProcesses(secret: string): {
      stop: () => { leaks: string[]; nixSeen: number }
      actionPid: (pid: number) => void
    } {
      const leaks = new Map<number, { argv: string; ppid: number }>()
      // The action's own Nix calls (its children): other lanes' runs use the same pipe (scripts/test.sh).
      const nixSeen = new Set<number>()
      let own = -1
      let ownArgv = ''
      const scan = (): void => {
        for (const pid of fs.readdirSync('/proc').filter(p => /^\d+$/.test(p))) {
          if (Number(pid) === own || Number(pid) === process.pid) continue
          try {
            const ppid = Number(
              fs
                .readFileSync(`/proc/${pid}/stat`, 'utf8')
                .replace(/^.*\) /s, '')
                .split(' ')[1]
            )
            const env = fs.readFileSync(`/proc/${pid}/environ`, 'utf8')
            const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8')
            if (env.includes(secret) || argv.includes(secret)) leaks.set(Number(pid), { argv, ppid })
            if (env.includes('NIX_USER_CONF_FILES=/dev/fd/3') && ppid === own) nixSeen.add(Number(pid))
          } catch {
            // gone, or not ours to read
          }
        }
      }
      const timer = setInterval(scan, 20)
      return {
        actionPid: pid => {
          own = pid
          ownArgv ||= fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8')
        },
        stop: () => {
          clearInterval(timer)
          // Not leaks: the action's own process (started with its inputs, as the runner does: this
          // test's child, seen before its first output too), and a child it forked that had not yet
          // exec'd its program (its argv still the action's, or empty, its environment a copy).
          const notLeak = (pid: number, l: { argv: string; ppid: number }): boolean =>
            pid === own || l.ppid === process.pid || (l.ppid === own && (l.argv === ownArgv || l.argv === ''))
          return {
            leaks: [...leaks]
              .filter(([pid, l]) => !notLeak(pid, l))
              .map(([pid, l]) => `${pid} (parent ${l.ppid}): ${l.argv.replace(/\0/g, ' ').slice(0, 80)}`),
            nixSeen: nixSeen.size
          }
        }
      }
    }

    it('diff-against a private repository: fetched with the token, the diff shown; the token in no other process', async () => {
      const watch = watchProcesses(github.token)
      let seen: ReturnType<typeof watch.stop> | undefined
      const run = await runAction(
        deployInputs('pi-gen1', {
          mode: 'build',
          'target-host': '',
          'jump-host': '',
          'diff-against': github.ref(repoA, 'pi-gen0'),
          'github-token': github.token
        }),
        { env: github.env(), onOutput: (_, child) => child.pid && watch.actionPid(child.pid) }
      ).finally(() => (seen = watch.stop()))
      expect(run.exitCode).toBe(0)
      expect(run.outputs.result).toBe('built')
      expect(run.summary).toMatch(new RegExp(`#### Changes against .*${repoA}`))
      expect(run.summary).toMatch(/\| \+ \| pi-tools \| \| 1\.0 \|/)
      const requests = github.requests().filter(r => r.url.startsWith(`/repos/nda/${repoA}/`))
      expect(requests.map(r => [r.url.replace(github.sha, 'SHA'), r.authorized])).toEqual(
        expect.arrayContaining([
          [`/repos/nda/${repoA}/commits/main`, true],
          [`/repos/nda/${repoA}/tarball/SHA`, true]
        ])
      )
      expect(requests.every(r => r.authorized)).toBe(true)
      // The watch saw the Nix calls that held the token on their pipe, and none had it in argv or env.
      expect(seen!.nixSeen).toBeGreaterThan(0)
      expect(seen!.leaks).toEqual([])
    }, 300_000)

    it('without github-token the private repository cannot be fetched: the build goes on, without the diff, saying why', async () => {
      const run = await runAction(
        deployInputs('pi-gen1', {
          mode: 'build',
          'target-host': '',
          'jump-host': '',
          'diff-against': github.ref(repoB, 'pi-gen0')
        }),
        { env: github.env() }
      )
      expect(run.exitCode).toBe(0)
      expect(run.outputs.result).toBe('built')
      expect(run.summary).toMatch(new RegExp(`no package diff: .*${repoB}`))
      const requests = github.requests().filter(r => r.url.startsWith(`/repos/nda/${repoB}/`))
      expect(requests.length).toBeGreaterThan(0)
      expect(requests.some(r => r.authorized)).toBe(false)
    }, 300_000)
  }
)

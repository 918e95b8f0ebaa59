/**
 * A stand-in for the part of GitHub's REST API that Nix's github: fetcher uses, served over HTTPS
 * in the jump host's network namespace (10.99.1.2:443, named api.github.ndatestbed.test by the
 * testbed, with a certificate from the testbed's own CA): `GET /repos/O/R/commits/REF` (the commit a
 * branch points at) and `GET /repos/O/R/tarball/SHA` (the repository as a tar.gz with one top
 * directory) -- every repository holds the fixture flake. Like a private repository, it answers
 * only requests with `Authorization: token <the token>`; every request is logged with whether it was
 * authorized, for the tests to check. Started as a process of its own (its pid recorded), ended by it.
 */
import { ChildProcess, execFileSync, spawn } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { testbed } from './harness'

export interface GitHubRequest {
  method: string
  url: string
  authorized: boolean
}

const SERVER = `
const https = require('https'), fs = require('fs')
const [dir, sha] = process.argv.slice(2)
const token = fs.readFileSync(dir + '/token', 'utf8')
const log = r => fs.appendFileSync(dir + '/requests', JSON.stringify(r) + '\\n')
https.createServer({ key: fs.readFileSync(dir + '/server.key'), cert: fs.readFileSync(dir + '/server.pem') }, (req, res) => {
  const authorized = req.headers.authorization === 'token ' + token
  log({ method: req.method, url: req.url, authorized })
  if (!authorized) { res.writeHead(404, { 'content-type': 'application/json' }); return res.end('{"message":"Not Found"}') }
  let m = /^\\/repos\\/([\\w.-]+)\\/([\\w.-]+)\\/commits\\/([\\w.-]+)$/.exec(req.url)
  if (m) { res.writeHead(200, { 'content-type': 'application/json' }); return res.end(JSON.stringify({ sha })) }
  m = /^\\/repos\\/([\\w.-]+)\\/([\\w.-]+)\\/tarball\\/([0-9a-f]{40})$/.exec(req.url)
  if (m && m[3] === sha) { res.writeHead(200, { 'content-type': 'application/x-gzip' }); return res.end(fs.readFileSync(dir + '/repo.tar.gz')) }
  res.writeHead(404); res.end('{"message":"Not Found"}')
}).listen(443, '10.99.1.2', () => fs.writeFileSync(dir + '/ready', ''))
`

export class GitHubStandIn {
  readonly token = `ghs_${Math.random().toString(36).slice(2)}${Date.now().toString(36)}`
  readonly sha = Array.from({ length: 40 }, () => '0123456789abcdef'[Math.floor(Math.random() * 16)]).join('')
  private dir = ''
  private child: ChildProcess | undefined

  /** Starts the server with the fixture flake as every repository's content. */
  async start(): Promise<void> {
    const t = testbed()
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-github-'))
    for (const f of ['key', 'pem'])
      fs.copyFileSync(
        path.join(t.TESTBED, 'github', `api.${t.TESTBED_GITHUB_HOST}.${f}`),
        path.join(this.dir, `server.${f}`)
      )
    fs.writeFileSync(path.join(this.dir, 'server.js'), SERVER)
    // The token in a file, not in argv: the test checks that no process but the action has it there.
    fs.writeFileSync(path.join(this.dir, 'token'), this.token, { mode: 0o600 })
    // GitHub's tarballs hold one top directory, OWNER-REPO-SHORTSHA.
    const top = path.join(this.dir, 'src', `nda-fixture-${this.sha.slice(0, 7)}`)
    fs.mkdirSync(top, { recursive: true })
    fs.cpSync(path.join(t.TESTBED, 'fixture'), top, { recursive: true })
    execFileSync('tar', [
      'czf',
      path.join(this.dir, 'repo.tar.gz'),
      '-C',
      path.dirname(top),
      path.basename(top)
    ])
    this.child = spawn(
      'ip',
      ['netns', 'exec', 'nda-jump', process.execPath, path.join(this.dir, 'server.js'), this.dir, this.sha],
      { stdio: 'inherit' }
    )
    for (let i = 0; i < 100 && !fs.existsSync(path.join(this.dir, 'ready')); i++)
      await new Promise(r => setTimeout(r, 100))
    if (!fs.existsSync(path.join(this.dir, 'ready'))) throw new Error('the GitHub stand-in did not start')
  }

  /** A github: reference to a repository it serves (each name its own: Nix caches what it fetched by URL). */
  ref(repo: string, attr: string): string {
    return `github:nda/${repo}/main?host=${testbed().TESTBED_GITHUB_HOST}#${attr}`
  }

  /** The environment a run needs to trust the stand-in's certificate. */
  env(): Record<string, string> {
    return { NIX_SSL_CERT_FILE: testbed().TESTBED_GITHUB_CA }
  }

  requests(): GitHubRequest[] {
    const f = path.join(this.dir, 'requests')
    if (!fs.existsSync(f)) return []
    return fs
      .readFileSync(f, 'utf8')
      .trim()
      .split('\n')
      .map(l => JSON.parse(l) as GitHubRequest)
  }

  /** Stops the server and waits for it to end (the next suite's may listen on the same address). */
  async stop(): Promise<void> {
    const child = this.child
    // ip netns exec execs the server: the recorded pid is the server's.
    if (child?.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      const ended = new Promise(resolve => child.once('exit', resolve))
      child.kill('SIGTERM')
      await ended
    }
    if (this.dir) fs.rmSync(this.dir, { recursive: true, force: true })
  }
}

import { createHash } from 'crypto'
import { execFileSync, spawn } from 'child_process'
import * as fs from 'fs'
import * as path from 'path'
import { parseKnownHosts } from '../../src/ssh/known-hosts'
import {
  ConnectOptions,
  hostKeyAnnouncementsIgnored,
  promptAckOf,
  RemoteHost,
  SharedJump
} from '../../src/ssh/connection'
import { Endpoint } from '../../src/ssh/endpoint'
import { ActionError } from '../../src/errors'
import { describeE2E, key, NODE24, testbed } from './harness'

/**
 * The transport through the testbed's jump host (OpenSSH): the runner acknowledges what the jump
 * host relays at once (PromptAck's empty window adjusts), and that keeps every command's output
 * and exit status intact -- also a large output, and over a connection used for many commands.
 * How much time it saves is the bench's to show (npm run bench, latency); this checks that the
 * adjusts are sent, and that OpenSSH takes them as the no-op they are.
 */
describeE2E('the SSH transport through a jump host', () => {
  const endpoint = (host: string, label: string): Endpoint => ({
    host,
    port: 22,
    user: 'root',
    key: { text: key('deploy') },
    label: `${label} root@${host}:22`
  })
  const opts = (): ConnectOptions => ({
    knownHosts: parseKnownHosts(fs.readFileSync(testbed().TESTBED_KNOWN_HOSTS, 'utf8')).lines,
    insecureSkipHostKeyCheck: false,
    timeoutMs: 20_000
  })

  /** This process's TCP connections to the jump host's sshd, as local ports. */
  const jumpConnections = (): string[] =>
    execFileSync('ss', ['-tnpH', 'state', 'established', 'dst', `${testbed().TESTBED_JUMP}:22`], {
      encoding: 'utf8'
    })
      .split('\n')
      .filter(l => l.includes(`pid=${process.pid},`))
      .map(l => l.trim().split(/\s+/)[2])

  it("the confirmation's redial: a new TCP connection and login on the target, over the same jump host connection", async () => {
    const host = await RemoteHost.connect(
      endpoint(testbed().TESTBED_PI, 'target'),
      [endpoint(testbed().TESTBED_JUMP, 'jump host')],
      opts()
    )
    let next: RemoteHost | undefined
    try {
      // SSH_CONNECTION on the target: the jump host's address and source port of this login.
      const first = (await host.exec('echo $SSH_CONNECTION')).stdout.trim().split(' ')
      const jumpBefore = jumpConnections()
      expect(jumpBefore).toHaveLength(1)
      next = await host.redialTarget()
      expect(next).toBeDefined()
      const second = (await next!.exec('echo $SSH_CONNECTION')).stdout.trim().split(' ')
      expect(second[0]).toBe(first[0])
      expect(second[1]).not.toBe(first[1])
      expect(jumpConnections()).toEqual(jumpBefore)
      // The old session is closed; the chain now belongs to the new one and ends with it.
      expect(host.alive).toBe(false)
      next!.close()
      for (let i = 0; i < 50 && jumpConnections().length > 0; i++) await new Promise(r => setTimeout(r, 100))
      expect(jumpConnections()).toHaveLength(0)
    } finally {
      host.close()
      next?.close()
    }
  }, 60_000)

  it('sends empty window adjusts when the jump host relays a command end, and every result stays intact', async () => {
    const jump = new SharedJump([endpoint(testbed().TESTBED_JUMP, 'jump host')], opts())
    const hold = jump.hold()
    const host = await RemoteHost.connect(endpoint(testbed().TESTBED_PI, 'target'), jump, opts())
    try {
      const chain = await jump.acquire()
      jump.release()
      const ack = promptAckOf(chain.first)
      expect(ack).toBeDefined()
      const before = ack!.nudges
      // Output, then the exit status a moment later: the pattern the adjusts are for.
      for (let i = 0; i < 20; i++) {
        const r = await host.exec(`echo out-${i}; echo err-${i} >&2; exit ${i % 4}`)
        expect(r).toMatchObject({ exitCode: i % 4, stdout: `out-${i}\n`, stderr: `err-${i}\n` })
      }
      expect(ack!.nudges).toBeGreaterThan(before)
      // Both hops' sshd announced their host keys after the login (OpenSSH does to every client),
      // and each announcement was taken without asking for a proof (ssh2's internals as
      // ignoreHostKeyAnnouncements expects); both connections carry on.
      const target = (host as unknown as { client: import('ssh2').Client }).client
      expect([hostKeyAnnouncementsIgnored(chain.first), hostKeyAnnouncementsIgnored(target)]).toEqual([1, 1])
      // A large output (many packets, ssh2's own window adjusts in between) arrives whole, in order.
      const hash = createHash('sha256')
      let bytes = 0
      const big = await host.exec('seq 1 400000; echo done >&2', {
        discardStdout: true,
        onStdout: chunk => {
          hash.update(chunk)
          bytes += Buffer.byteLength(chunk)
        }
      })
      const expected = Array.from({ length: 400000 }, (_, i) => `${i + 1}\n`).join('')
      expect(big).toMatchObject({ exitCode: 0, stderr: 'done\n' })
      expect(bytes).toBe(expected.length)
      expect(hash.digest('hex')).toBe(createHash('sha256').update(expected).digest('hex'))
      // The jump host kept the connection: sshd took every empty adjust as a no-op.
      expect(host.alive).toBe(true)
      expect((await host.exec('echo still')).stdout).toBe('still\n')
    } finally {
      host.close()
      hold()
    }
  }, 120_000)

  it("a target that closes its TCP connection behind the jump host (a rebooting Pi's sshd, killed after it let us in): its commands fail as a lost connection, none waits forever", async () => {
    // The jump host relays to the Pi through a relay in its own namespace, which can end its side
    // alone: the jump host then sends the channel's EOF and keeps the channel half-open.
    const relay = spawn(
      'ip',
      [
        'netns',
        'exec',
        'nda-jump',
        NODE24,
        path.join(__dirname, '..', '..', 'testbed', 'half-close-relay.js'),
        testbed().TESTBED_PI,
        '22'
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] }
    )
    try {
      const port = Number(
        await new Promise<string>((resolve, reject) => {
          relay.stdout.once('data', (d: Buffer) => resolve(d.toString().trim()))
          relay.once('exit', code => reject(new Error(`the relay exited (${code})`)))
        })
      )
      // The Pi's host key, for the address the jump host dials now.
      const piKey = fs
        .readFileSync(testbed().TESTBED_KNOWN_HOSTS, 'utf8')
        .split('\n')
        .find(l => l.split(' ')[0].split(',').includes(testbed().TESTBED_PI))!
      const knownHosts = parseKnownHosts(`[127.0.0.1]:${port} ${piKey.split(' ').slice(1).join(' ')}`).lines
      const host = await RemoteHost.connect(
        { ...endpoint('127.0.0.1', 'target'), port, label: `target root@127.0.0.1:${port}` },
        [endpoint(testbed().TESTBED_JUMP, 'jump host')],
        { ...opts(), knownHosts: [...opts().knownHosts, ...knownHosts] }
      )
      try {
        expect((await host.exec('echo up')).stdout).toBe('up\n')
        // A command under way, with no timeout of its own (as a poll during a reboot can be).
        const running = host.exec('sleep 600')
        running.catch(() => undefined)
        await new Promise(r => setTimeout(r, 500))
        process.kill(relay.pid!, 'SIGUSR1')
        // A generous deadline, so that a hang fails here (and the relay and connection still end).
        const outcome = await Promise.race([
          running.then(
            () => 'finished',
            (e: unknown) => e
          ),
          new Promise(r => setTimeout(() => r('still waiting after 30 s'), 30_000).unref())
        ])
        expect(outcome).toBeInstanceOf(ActionError)
        expect((outcome as ActionError).phase).toBe('connect')
        expect(host.alive).toBe(false)
        // And the next command fails at once instead of waiting for a channel.
        await expect(host.exec('true')).rejects.toBeInstanceOf(ActionError)
      } finally {
        host.close()
      }
    } finally {
      relay.kill('SIGKILL')
    }
  }, 60_000)
})

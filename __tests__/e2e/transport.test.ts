import { createHash } from 'crypto'
import { execFileSync } from 'child_process'
import * as fs from 'fs'
import { parseKnownHosts } from '../../src/ssh/known-hosts'
import { ConnectOptions, promptAckOf, RemoteHost, SharedJump } from '../../src/ssh/connection'
import { Endpoint } from '../../src/ssh/endpoint'
import { describeE2E, key, testbed } from './harness'

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
})

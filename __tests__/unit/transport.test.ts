import { spawn } from 'child_process'
import { createServer } from 'net'
import { bytesReadBy } from '../../src/deploy/copy'
import { sshSocket } from '../../src/ssh/connection'

describe('sshSocket (the SSH transport to the jump host or target)', () => {
  it('delivers every write, in order, whether written in one tick or across ticks', async () => {
    const received: Buffer[] = []
    const server = createServer(s => s.on('data', d => received.push(d)))
    await new Promise<void>(r => server.listen(0, '127.0.0.1', () => r()))
    const port = (server.address() as { port: number }).port
    const socket = sshSocket('127.0.0.1', port)
    await new Promise<void>(r => socket.once('connect', () => r()))
    const chunks = Array.from({ length: 200 }, (_, i) => Buffer.alloc(1000 + i, i % 256))
    // Half in one tick (gathered), half one per tick.
    for (const c of chunks.slice(0, 100)) socket.write(c)
    for (const c of chunks.slice(100)) await new Promise<void>(r => socket.write(c, () => r()))
    await new Promise<void>(r => socket.end(() => r()))
    await new Promise(r => setTimeout(r, 100))
    server.close()
    expect(Buffer.concat(received).equals(Buffer.concat(chunks))).toBe(true)
  })
})

describe('bytesReadBy (copy progress with the compressor reading the export directly)', () => {
  it('counts what a running process has read from its stdin', async () => {
    if (process.platform !== 'linux') return
    // cat reads everything written so far and waits for more (stdin stays open): alive, as the
    // compressor is during a copy.
    const reader = spawn('cat', [], { stdio: ['pipe', 'ignore', 'ignore'] })
    reader.stdin.write(Buffer.alloc(300000))
    let seen = 0
    for (let i = 0; i < 100 && seen < 300000; i++) {
      await new Promise(r => setTimeout(r, 50))
      seen = bytesReadBy(reader.pid) ?? 0
    }
    reader.kill()
    expect(bytesReadBy(undefined)).toBeUndefined()
    expect(bytesReadBy(999999999)).toBeUndefined()
    expect(seen).toBeGreaterThanOrEqual(300000)
  })
})

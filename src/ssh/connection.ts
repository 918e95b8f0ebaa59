import * as core from '@actions/core'
import { Client, ClientChannel, ConnectConfig } from 'ssh2'
import { Socket } from 'net'
import { Readable } from 'stream'
import { ActionError, errorMessage } from '../errors'
import { TailBuffer } from '../tail-buffer'
import { Endpoint } from './endpoint'
import { shellCommand } from './quote'
import { KnownHostLine, HostKeyVerdict, blobKeyType, fingerprint, hostKeyPolicy } from './known-hosts'
import { expandProxyCommand, ProxyProcess } from './proxy'
import { info, printUntrusted } from '../log/untrusted'

export interface ConnectOptions {
  knownHosts: KnownHostLine[]
  insecureSkipHostKeyCheck: boolean
  /** Bound on each hop's TCP connect + SSH handshake + authentication. */
  timeoutMs: number
  /** Run every command through `sudo -n` (target-user is not root). */
  sudo?: boolean
  /**
   * proxy-command (tokens not yet expanded): started for each connection to the first hop (the
   * jump host when there is one, else the target), which then runs over its stdin and stdout.
   */
  proxyCommand?: string
  /**
   * Compress the target's SSH session (zlib@openssh.com, after authentication; OpenSSH's sshd
   * takes it by default). A deploy plan's shard sets it: its targets fetch the NARs from the plan's
   * cache, so what passes through the runner's link is the action's own commands and scripts,
   * text that compresses about fourfold. Off otherwise: a copy's stream is zstd already.
   */
  compressTarget?: boolean
}

/**
 * chacha20-poly1305 would suit a Pi best (no AES instructions), but ssh2's pure-JS implementation --
 * the one dist/ uses, as it ships no native addons -- corrupts the transport through a jump host
 * ("Invalid ssh2 packet type", seen here on Node 24; also reported against ssh2 1.17 by other
 * projects). So it is never offered; AES-GCM is negotiated instead, and zstd keeps the bytes the Pi
 * must decrypt low.
 */
export const NEVER_OFFERED_CIPHERS = ['chacha20-poly1305@openssh.com']

export interface RemoteResult {
  exitCode: number
  signal?: string
  stdout: string
  stderr: string
}

export interface ExecOptions {
  stdin?: Readable | string
  onStdout?: (chunk: string) => void
  onStderr?: (chunk: string) => void
  /** Fails the command (and closes its channel) after this long. */
  timeoutMs?: number
  /** Keep stdout as raw bytes count only (for large streams); stdout in the result is then ''. */
  discardStdout?: boolean
  /** What the command does, for errors ("following the activation log"); never the script itself. */
  what?: string
  /** Sent as it is, never through sudo (a deploy user's gate takes only its own command lines). */
  noSudo?: boolean
}

/**
 * What one command's result keeps of its output: the tail, never all of it. A target (or what runs
 * on it) can print without end; memory must not grow with it.
 */
export const MAX_KEPT_STDOUT = 16 << 20
export const MAX_KEPT_STDERR = 1 << 20

const KEEPALIVE_INTERVAL_MS = 10_000
const KEEPALIVE_COUNT_MAX = 3

/** Turns ssh2's errors into ones that say which hop failed and what to do. */
function connectError(
  ep: Endpoint,
  err: Error & { level?: string; code?: string },
  verdict?: HostKeyVerdict
): ActionError {
  if (verdict && !verdict.ok)
    return new ActionError(
      `host key check failed for ${ep.label}: ${verdict.message}`,
      'Update known-hosts (a repository variable or secret) only after checking the key out of band, e.g. on the console: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub',
      'connect'
    )
  const msg = err.message
  if (err.level === 'client-authentication')
    return new ActionError(
      `${ep.label} refused the key (authentication failed for user ${ep.user})`,
      `Add the deploy key's public half to ${ep.user}'s authorized_keys on that host (NixOS: users.users.${ep.user}.openssh.authorizedKeys.keys), or fix target-user / jump-host.`,
      'connect'
    )
  if (err.level === 'client-timeout' || /timed out/i.test(msg))
    return new ActionError(
      `${ep.label} did not answer within the connect timeout`,
      'Check that the host is up and reachable from the runner (firewall, address, port), or raise connect-timeout.',
      'connect'
    )
  if (/no matching host key/i.test(msg))
    return new ActionError(
      `${ep.label} offers none of the host key types that known-hosts lists for it`,
      'Add its current host key to known-hosts (ssh-keyscan the host and check the fingerprint out of band).',
      'connect'
    )
  const code = err.code ? ` (${err.code})` : ''
  return new ActionError(
    `cannot connect to ${ep.label}: ${msg}${code}`,
    'Check the address and port, and that sshd runs there and is reachable from the runner.',
    'connect'
  )
}

/**
 * The TCP connection an SSH client runs over (to the jump host, or to the target directly).
 * TCP_NODELAY from the first byte: the handshake and the authentication are a dozen small
 * request/response exchanges, then every remote command and the tunnel inside the jump host's
 * connection are more; with Nagle's algorithm each waited for the peer's delayed ACK (~40 ms on
 * Linux): 0.25 s instead of 0.07 s for the jump host's handshake alone, on Node 24.
 * What is written within one tick goes out with one writev: ssh2 writes each SSH packet (at most
 * 32 KiB) with its own write(), i.e. its own system call, and through a jump host every packet of
 * the tunnelled connection is wrapped in one or two packets of the outer one. Gathered, a copy
 * spends a third less CPU in the kernel (measured on the testbed, Node 24): the runner's one
 * JavaScript thread both encrypts and sends everything.
 */
export function sshSocket(host: string, port: number): Socket {
  return transportSocket().socket.connect({ host, port })
}

/** An unconnected sshSocket, with what acknowledges its incoming data at once (see PromptAck). */
function transportSocket(): { socket: Socket; ack: PromptAck } {
  const socket = new Socket()
  socket.setNoDelay(true)
  const ack = new PromptAck(socket)
  const write = socket.write.bind(socket) as (...args: unknown[]) => boolean
  let corked = false
  socket.write = ((...args: unknown[]): boolean => {
    ack.wrote()
    if (!corked) {
      corked = true
      socket.cork()
      process.nextTick(() => {
        corked = false
        socket.uncork()
      })
    }
    return write(...args)
  }) as Socket['write']
  return { socket, ack }
}

/** ssh2's channel internals PromptAck uses (ssh2 1.17; the e2e transport suite fails if they are gone). */
interface ChannelInternals {
  outgoing?: { id?: number; state?: string }
  _client?: { _protocol?: { channelWindowAdjust?: (id: number, amount: number) => void } }
}

/**
 * Makes the runner acknowledge at once what the jump host sends. A jump host's sshd relays the
 * target's packets as it reads them, with Nagle's algorithm on (OpenSSH turns it off only for
 * interactive sessions), so when a command's output and its exit status reach it a moment apart,
 * the second waits until the runner acknowledges the first -- and Linux delays that ACK up to
 * 40 ms when the runner has nothing to send. Measured on the testbed: 45-50 ms of every remote
 * command's 50-55 ms through the jump host, 3 ms without. So when data arrives and nothing is
 * written back before the event loop turns, an empty CHANNEL_WINDOW_ADJUST (0 bytes more: a no-op
 * for the server, which does not reply) goes out on one of the tunnels, and the ACK with it.
 */
export class PromptAck {
  private readonly tunnels = new Set<ClientChannel>()
  private quiet = false
  private scheduled = false
  private listening = false
  /** How many empty window adjusts were sent (for tests). */
  nudges = 0

  constructor(private readonly socket: Socket) {}

  /** Watches what arrives once there is a tunnel to answer on (a target dialled directly has none). */
  private listen(): void {
    if (this.listening) return
    this.listening = true
    this.socket.on('data', () => {
      this.quiet = true
      if (this.scheduled) return
      this.scheduled = true
      setImmediate(() => {
        this.scheduled = false
        if (this.quiet) this.nudge()
      })
    })
  }

  /** Something was written: it carries the ACK. */
  wrote(): void {
    this.quiet = false
  }

  /** A channel forwarded by this connection's host (to the next hop or a target). */
  addTunnel(channel: ClientChannel): void {
    this.listen()
    this.tunnels.add(channel)
    channel.once('close', () => this.tunnels.delete(channel))
  }

  private nudge(): void {
    for (const tunnel of this.tunnels) {
      const c = tunnel as unknown as ChannelInternals
      const send = c._client?._protocol?.channelWindowAdjust
      if (c.outgoing?.state !== 'open' || c.outgoing.id === undefined || !send) continue
      send.call(c._client!._protocol, c.outgoing.id, 0)
      this.nudges++
      return
    }
  }
}

/** ssh2's protocol internals ignoreHostKeyAnnouncements uses (ssh2 1.17; the e2e transport suite fails if they are gone). */
interface ProtocolInternals {
  _protocol?: {
    _handlers?: { GLOBAL_REQUEST?: (proto: unknown, name: string, wantReply: boolean, data: unknown) => void }
    requestSuccess?: () => void
  }
}

/**
 * After the login, OpenSSH's sshd announces all its host keys (hostkeys-00@openssh.com, for
 * UpdateHostKeys), and ssh2 asks it to prove each one (hostkeys-prove-00: a signature per key back,
 * about 0.6 KB per connection through the jump host, three connections per deploy) for an event
 * nothing here listens to: known-hosts is the user's input, checked, never updated. The
 * announcement is taken as said (wants no reply; acknowledged if it asks) and nothing is asked.
 * Every other global request goes to ssh2's own handler. Whether it took (tests look).
 */
export function ignoreHostKeyAnnouncements(client: Client, onIgnored?: () => void): boolean {
  const proto = (client as unknown as ProtocolInternals)._protocol
  const handlers = proto?._handlers
  const own = handlers?.GLOBAL_REQUEST
  if (!handlers || !own) return false
  handlers.GLOBAL_REQUEST = (p, name, wantReply, data) => {
    if (name !== 'hostkeys-00@openssh.com') return own(p, name, wantReply, data)
    onIgnored?.()
    if (wantReply) proto.requestSuccess?.()
  }
  return true
}

/** How many host keys announcements each client took without a proof (tests look). */
const ignoredAnnouncements = new WeakMap<Client, number>()

/** The host keys announcements a client ignored; undefined when ssh2's internals were not there. */
export function hostKeyAnnouncementsIgnored(client: Client): number | undefined {
  return ignoredAnnouncements.get(client)
}

/** The clients whose connection ended (the other end's EOF) before a RemoteHost took them. */
const endedClients = new WeakSet<Client>()

/** The PromptAck of each client dialled over TCP (the first hop, or a target without jump host). */
const promptAcks = new WeakMap<Client, PromptAck>()

/** The PromptAck of a client's own TCP connection, if it has one (tests look at its nudges). */
export function promptAckOf(client: Client): PromptAck | undefined {
  return promptAcks.get(client)
}

/** The proxy for a first hop, when proxy-command is set; its stderr is shown, never obeyed. */
function startProxy(ep: Endpoint, template: string): ProxyProcess {
  const command = expandProxyCommand(template, {
    host: ep.host,
    port: ep.port,
    user: ep.user,
    name: ep.name ?? ep.host
  })
  return new ProxyProcess(command, text => printUntrusted(text, `proxy-command (${ep.label}): `))
}

/** A connect error through a proxy says so, with what the proxy printed last. */
function throughProxy(e: ActionError, proxy: ProxyProcess | undefined): ActionError {
  if (!proxy) return e
  const said = proxy.stderrTail()
  return new ActionError(
    `${e.message} (through proxy-command${said ? `, which printed: ${said}` : ''})`,
    `${e.hint} Check proxy-command: run it by hand on the runner; it must connect its stdin and stdout to the host's SSH port.`,
    e.phase
  )
}

function proxyEnded(ep: Endpoint, how: string): ActionError {
  return new ActionError(
    `proxy-command for ${ep.label} ended (${how}) before the SSH connection was up`,
    'Check proxy-command: run it by hand on the runner; it must stay up and connect its stdin and stdout to the host.',
    'connect'
  )
}

/**
 * ssh2's settings for one hop (compressTarget: set only for the target's): its user and key, keepalives, and the host key checked against
 * known-hosts -- offering only the algorithms known-hosts can verify, so a host with several keys
 * is checked against the one we know (as OpenSSH does).
 */
function clientConfig(
  ep: Endpoint,
  opts: ConnectOptions,
  policy: ReturnType<typeof hostKeyPolicy>,
  setVerdict: (v: HostKeyVerdict) => void
): ConnectConfig {
  const config: ConnectConfig = {
    host: ep.host,
    port: ep.port,
    username: ep.user,
    privateKey: ep.key.text,
    passphrase: ep.key.passphrase,
    // The key alone: ssh2 would first try "none" (a round trip through every hop, to learn what
    // the server allows), which no sshd the action deploys to accepts.
    authHandler: ['publickey'],
    readyTimeout: opts.timeoutMs,
    keepaliveInterval: KEEPALIVE_INTERVAL_MS,
    keepaliveCountMax: KEEPALIVE_COUNT_MAX,
    hostVerifier: (key: Buffer): boolean => {
      if (opts.insecureSkipHostKeyCheck) {
        // The plan's warning (the report's annotation) says the check is off; this names the key.
        info(
          `${ep.label}: host key ${blobKeyType(key)} ${fingerprint(key)} accepted without checking (insecure-skip-host-key-check)`
        )
        return true
      }
      const verdict = policy.verify(key)
      setVerdict(verdict)
      return verdict.ok
    }
  }
  if (!opts.insecureSkipHostKeyCheck && policy.algorithms.length > 0)
    config.algorithms = {
      serverHostKey: policy.algorithms as NonNullable<ConnectConfig['algorithms']>['serverHostKey']
    }
  // Offered first, taken by any OpenSSH sshd (after authentication: zlib@openssh.com).
  if (opts.compressTarget)
    config.algorithms = { ...config.algorithms, compress: ['zlib@openssh.com', 'zlib', 'none'] }
  return config
}

/** Starting proxy-command for this hop threw (most often: its template cannot be expanded for the hop). */
function proxyCommandError(ep: Endpoint, e: unknown): ActionError {
  return new ActionError(`proxy-command for ${ep.label}: ${errorMessage(e)}`, 'Fix proxy-command.', 'connect')
}

/**
 * A proxy that ends before the handshake fails the connection at once, not at the timeout; one
 * that ends later closes it (ssh2 sees its stream end). The proxy ends with the connection.
 */
function tieToProxy(client: Client, proxy: ProxyProcess, ep: Endpoint, fail: (e: ActionError) => void): void {
  void proxy.exited.then(how => fail(proxyEnded(ep, how)))
  client.once('close', () => proxy.kill())
}

/**
 * The stream ssh2 talks over: the one given (a channel through a jump host), the proxy's, or else
 * a TCP connection of our own to the host (with its PromptAck).
 */
function transportFor(
  client: Client,
  ep: Endpoint,
  sock: NodeJS.ReadableStream | undefined,
  proxy: ProxyProcess | undefined
): ConnectConfig['sock'] {
  if (sock || proxy) return (sock ?? proxy?.stream) as ConnectConfig['sock']
  const transport = transportSocket()
  promptAcks.set(client, transport.ack)
  return transport.socket.connect({ host: ep.host, port: ep.port }) as ConnectConfig['sock']
}

function connectClient(ep: Endpoint, opts: ConnectOptions, sock?: NodeJS.ReadableStream): Promise<Client> {
  const policy = hostKeyPolicy(opts.knownHosts, ep.host, ep.port)
  return new Promise((resolve, reject) => {
    const client = new Client()
    let verdict: HostKeyVerdict | undefined
    let settled = false
    let proxy: ProxyProcess | undefined
    const fail = (e: ActionError): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      client.end()
      proxy?.kill()
      reject(throughProxy(e, proxy))
    }
    // ssh2's readyTimeout covers the handshake; this covers the whole of connect, TCP included.
    const timer = setTimeout(
      () => fail(connectError(ep, Object.assign(new Error('timed out'), { level: 'client-timeout' }))),
      opts.timeoutMs
    )
    client.on('ready', () => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      resolve(client)
    })
    // Through a proxy, a broken pipe or a closed stream usually means the proxy ended: say that
    // (its exit is seen a moment later than ssh2's error), not "EPIPE".
    const failLater = (e: ActionError): void => {
      if (!proxy) return fail(e)
      void Promise.race([
        proxy.exited,
        new Promise<undefined>(r => setTimeout(() => r(undefined), 1000))
      ]).then(how => fail(how === undefined ? e : proxyEnded(ep, how)))
    }
    client.on('error', err => failLater(connectError(ep, err, verdict)))
    const closed = (): void =>
      failLater(connectError(ep, new Error('the connection closed during the handshake'), verdict))
    client.on('close', closed)
    // SSH has no half-close: the other end's EOF ends the connection. Over a forwarded channel or
    // a proxy's pipes, ssh2 hears only 'end' there (no 'close' until our side ends too). An end
    // just after the login (in the same read) comes before the RemoteHost listens: noted here.
    client.on('end', () => {
      endedClients.add(client)
      closed()
    })
    const config = clientConfig(ep, opts, policy, v => (verdict = v))
    if (!sock && opts.proxyCommand !== undefined) {
      try {
        proxy = startProxy(ep, opts.proxyCommand)
      } catch (e) {
        return fail(proxyCommandError(ep, e))
      }
      tieToProxy(client, proxy, ep, fail)
    }
    config.sock = transportFor(client, ep, sock, proxy)
    try {
      client.connect(config)
      const ignored = () => ignoredAnnouncements.set(client, (ignoredAnnouncements.get(client) ?? 0) + 1)
      if (ignoreHostKeyAnnouncements(client, ignored)) ignoredAnnouncements.set(client, 0)
    } catch (e) {
      fail(connectError(ep, e as Error))
      if (!sock) (config.sock as Socket).destroy()
    }
  })
}

/** A command's output as it arrives: the tails kept of it, and how the command exited. */
interface CommandOutput {
  out: TailBuffer
  err: TailBuffer
  exitCode: number
  signal: string | undefined
}

/** Keeps a command channel's output and exit status in `output`, and passes its text to opts' callbacks. */
function collectOutput(channel: ClientChannel, opts: ExecOptions, output: CommandOutput): void {
  channel.on('data', (d: Buffer) => {
    if (!opts.discardStdout) output.out.push(d)
    opts.onStdout?.(d.toString('utf8'))
  })
  channel.stderr.on('data', (d: Buffer) => {
    output.err.push(d)
    opts.onStderr?.(d.toString('utf8'))
  })
  channel.on('exit', (code: number | null, sig?: string) => {
    if (code !== null && code !== undefined) output.exitCode = code
    if (sig) output.signal = sig
  })
}

/** Gives the command its input (a string, or a stream piped in), or none: its stdin ends at once. */
function sendStdin(channel: ClientChannel, stdin: ExecOptions['stdin'], fail: (e: Error) => void): void {
  if (typeof stdin === 'string') channel.end(stdin)
  else if (stdin) {
    stdin.on('error', ex => fail(ex))
    stdin.pipe(channel)
  } else channel.end()
}

function channelOpenError(label: string, what: string, e: Error): ActionError {
  return new ActionError(
    `cannot open a channel to ${label} for ${what}: ${e.message}`,
    'Re-run the job; if it persists, check sshd on the target (MaxSessions).',
    'connect'
  )
}

function commandTimeoutError(label: string, what: string, timeoutMs: number): ActionError {
  return new ActionError(
    `${what} on ${label} did not finish within ${Math.round(timeoutMs / 1000)} s`,
    'Check the target for a hung process or a full disk, then re-run.',
    'connect'
  )
}

/**
 * A channel the jump host forwards to the target. One that opens only after the time limit is
 * closed at once: on a fleet's shared jump connection each would otherwise keep a connection from
 * the jump host to the target open for the rest of the run.
 */
export function forwardThrough(
  jump: Pick<Client, 'forwardOut'>,
  jumpEp: Endpoint,
  target: Endpoint,
  timeoutMs: number
): Promise<ClientChannel> {
  return new Promise((resolve, reject) => {
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      reject(
        new ActionError(
          `${jumpEp.label} could not reach ${target.label} within the connect timeout`,
          'Check the target address as the jump host sees it (it is dialled from the jump host), and that the target is up.',
          'connect'
        )
      )
    }, timeoutMs)
    jump.forwardOut('127.0.0.1', 0, target.host, target.port, (err, channel) => {
      clearTimeout(timer)
      if (timedOut) {
        if (!err) channel.close()
        return
      }
      if (err)
        reject(
          new ActionError(
            `${jumpEp.label} could not open a connection to ${target.label}: ${err.message}`,
            'Check the target address as the jump host sees it, that the target is up, and that the jump host allows TCP forwarding to it (AllowTcpForwarding, PermitOpen).',
            'connect'
          )
        )
      else {
        promptAcks.get(jump as Client)?.addTunnel(channel)
        gatherWrites(channel)
        resolve(channel)
      }
    })
  })
}

/** A write this small waits for the rest of its tick (see gatherWrites); a copy's packets do not. */
const GATHERED_WRITE_MAX = 4096

/**
 * Gathers the small writes the tunnelled client makes within one tick into one write on the
 * channel, as transportSocket gathers a TCP connection's: ssh2 writes each SSH packet of the next
 * hop's session on its own, and each write to a channel is a packet of the jump host's connection,
 * with its own header, padding and MAC (about 50 bytes) and its own encryption. Counted on a
 * shard's deploy of one Pi: 212 writes, 189 of them under 64 bytes (window adjustments, channel
 * opens, requests, EOFs, closes). A copy's 32 KiB packets go as they come.
 */
export function gatherWrites(
  channel: Pick<ClientChannel, 'write' | 'end' | 'destroy' | 'destroyed' | 'writableEnded'>
): void {
  const write = channel.write.bind(channel) as (chunk: Uint8Array) => boolean
  const end = channel.end.bind(channel) as (...args: unknown[]) => unknown
  const destroy = channel.destroy.bind(channel) as (...args: unknown[]) => unknown
  let pending: Uint8Array[] = []
  const flush = (): void => {
    // A channel the far side closed meanwhile takes nothing more (so would it have, written at once).
    if (pending.length === 0 || channel.destroyed || channel.writableEnded) return void (pending = [])
    const chunk = pending.length === 1 ? pending[0] : Buffer.concat(pending)
    pending = []
    write(chunk)
  }
  channel.write = ((chunk: unknown, ...rest: unknown[]): boolean => {
    // Only ssh2's own writes are gathered: bytes, no encoding or callback.
    if (!(chunk instanceof Uint8Array) || rest.length > 0 || chunk.length > GATHERED_WRITE_MAX) {
      flush()
      return (write as (...a: unknown[]) => boolean)(chunk, ...rest)
    }
    if (pending.length === 0) process.nextTick(flush)
    pending.push(chunk)
    return true
  }) as ClientChannel['write']
  channel.end = ((...args: unknown[]) => {
    flush()
    return end(...args)
  }) as ClientChannel['end']
  channel.destroy = ((...args: unknown[]) => {
    flush()
    return destroy(...args)
  }) as ClientChannel['destroy']
}

/**
 * The SSH connections to a chain of jump hosts, as OpenSSH's `ProxyJump a,b`: the first hop over
 * TCP (or proxy-command), each next one over a channel forwarded by the hop before it, so one TCP
 * connection leaves the runner and every hop's host key and key are checked on their own. `last`
 * is the hop that forwards to the target. Ending the chain ends every hop, the last first.
 */
export class JumpChain {
  private constructor(
    readonly hops: Endpoint[],
    private readonly clients: Client[]
  ) {
    // Shared by several machines' sessions: one close/error listener each on every hop.
    for (const c of clients) c.setMaxListeners(0)
    this.onLost(() => (this.down = true))
  }

  /** Set once a hop's connection closed or failed: the chain carries nothing any more. */
  private down = false

  /** Whether every hop's connection is still up. */
  get alive(): boolean {
    return !this.down
  }

  static async connect(hops: Endpoint[], opts: ConnectOptions): Promise<JumpChain> {
    const clients: Client[] = []
    try {
      for (const [n, hop] of hops.entries()) {
        const channel =
          n === 0 ? undefined : await forwardThrough(clients[n - 1], hops[n - 1], hop, opts.timeoutMs)
        // A jump host carries the target's session, encrypted: nothing there to compress.
        clients.push(await connectClient(hop, { ...opts, compressTarget: false }, channel))
      }
    } catch (e) {
      new JumpChain(hops, clients).end()
      throw e
    }
    return new JumpChain(hops, clients)
  }

  /** The hop the runner dials itself (over TCP, or proxy-command). */
  get first(): Client {
    return this.clients[0]
  }

  /** The hop that reaches the target. */
  get last(): Client {
    return this.clients[this.clients.length - 1]
  }

  get lastHop(): Endpoint {
    return this.hops[this.hops.length - 1]
  }

  /**
   * Calls `listener` whenever a hop's connection closes or fails (each hop carries the next, so a
   * loss is usually heard from several); returns what stops listening.
   */
  onLost(listener: (what: string, err?: Error) => void): () => void {
    const removers = this.clients.map((c, n) => {
      const onClose = (): void => listener(`the connection to ${this.hops[n].label} closed`)
      const onError = (err: Error): void => listener(`the connection to ${this.hops[n].label} failed`, err)
      c.on('close', onClose)
      // A hop over the hop before it ends with the channel's EOF only (see RemoteHost).
      c.on('end', onClose)
      c.on('error', onError)
      return () => {
        c.removeListener('close', onClose)
        c.removeListener('end', onClose)
        c.removeListener('error', onError)
      }
    })
    return () => removers.forEach(r => r())
  }

  end(): void {
    for (const c of [...this.clients].reverse())
      try {
        c.end()
      } catch (e) {
        core.debug(`closing a jump host connection: ${errorMessage(e)}`)
      }
  }
}

/**
 * One SSH session to the target, possibly through a jump host (the Pi is reached by `forwardOut`
 * on the jump host's connection, so only one TCP connection leaves the runner). Like colmena's
 * `Host`, it only runs commands; what to run is decided by the deploy phase.
 */
export class RemoteHost {
  private closed = false
  private lostReason: string | undefined
  private readonly stopWatchingJump?: () => void
  /** The commands under way, each failed at once when the connection is lost or closed. */
  private readonly pending = new Set<() => void>()

  private constructor(
    readonly target: Endpoint,
    private readonly sudo: boolean,
    private readonly client: Client,
    private readonly opts: ConnectOptions,
    /**
     * The chain it came through (`owned` when this host dialled it: closing the host ends it) and
     * the channel the jump host forwards to the target.
     */
    private jump?: { chain: JumpChain; release: () => void; owned: boolean; tunnel: ClientChannel }
  ) {
    const lost = (what: string, err?: Error): void => {
      if (!this.closed) this.lostReason ??= `${what}${err ? `: ${err.message}` : ''}`
      this.abandon()
    }
    client.on('close', () => lost(`the connection to ${target.label} closed`))
    // A target that closes its TCP connection behind a jump host (a rebooting Pi's sshd killed
    // after it let us in) arrives as the tunnel's EOF: ssh2 then says 'end', stops its keepalives
    // and never 'close' -- without this, every command on it would wait forever.
    client.on('end', () => lost(`the connection to ${target.label} ended`))
    if (endedClients.has(client)) lost(`the connection to ${target.label} ended`)
    client.on('error', err => lost(`the connection to ${target.label} failed`, err))
    if (jump) this.stopWatchingJump = jump.chain.onLost(lost)
  }

  /**
   * Connects to the target, through a chain of jump hosts if given (its own connections, or a
   * shared chain's).
   */
  static async connect(
    target: Endpoint,
    jump: Endpoint[] | SharedJump | undefined,
    opts: ConnectOptions
  ): Promise<RemoteHost> {
    const sudo = opts.sudo ?? false
    if (!jump || (Array.isArray(jump) && jump.length === 0))
      return new RemoteHost(target, sudo, await connectClient(target, opts), opts)
    const shared = jump instanceof SharedJump ? jump : undefined
    const chain = shared ? await shared.acquire() : await JumpChain.connect(jump as Endpoint[], opts)
    const release = shared ? () => shared.release() : () => chain.end()
    try {
      const channel = await forwardThrough(chain.last, chain.lastHop, target, opts.timeoutMs)
      return new RemoteHost(target, sudo, await connectClient(target, opts, channel), opts, {
        chain,
        release,
        owned: !shared,
        tunnel: channel
      })
    } catch (e) {
      release()
      throw e
    }
  }

  get label(): string {
    return this.target.label
  }

  /** Whether the connection is still usable (not closed, not lost). */
  get alive(): boolean {
    return !this.closed && this.lostReason === undefined
  }

  /**
   * Runs a command string (already quoted: see shellCommand) and collects its result. With sudo, the
   * command runs as root through `sudo -n` (never prompts: a password requirement fails at once).
   */
  exec(command: string, opts: ExecOptions = {}): Promise<RemoteResult> {
    const wrapped =
      this.sudo && !opts.noSudo ? shellCommand(['sudo', '-n', '--', 'sh', '-c', command]) : command
    // Since the process started: a run's commands in order, with the gaps between them.
    const startedAt = performance.now()
    const result = this.execRaw(wrapped, opts)
    // With RUNNER_DEBUG=1 (re-run with debug logging), every remote command and its duration.
    if (core.isDebug())
      void result.then(
        r =>
          core.debug(
            `remote exit ${r.exitCode} after ${Math.round(performance.now() - startedAt)} ms (started at ${Math.round(startedAt)} ms): ${command.replace(/\s+/g, ' ').slice(0, 120)}`
          ),
        () => undefined
      )
    return result
  }

  private execRaw(wrapped: string, opts: ExecOptions): Promise<RemoteResult> {
    return new Promise((resolve, reject) => {
      if (this.lostReason || this.closed) return reject(this.lossError(opts.what))
      const output: CommandOutput = {
        out: new TailBuffer(MAX_KEPT_STDOUT),
        err: new TailBuffer(MAX_KEPT_STDERR),
        exitCode: -1,
        signal: undefined
      }
      const what = opts.what ?? 'running a command'
      let timer: NodeJS.Timeout | undefined
      let done = false
      const onClientClose = (): void => finish(this.lossError(what))
      const finish = (e?: Error): void => {
        if (done) return
        done = true
        if (timer) clearTimeout(timer)
        this.client.removeListener('close', onClientClose)
        this.pending.delete(onClientClose)
        if (e) reject(e)
        else
          resolve({
            exitCode: output.exitCode,
            signal: output.signal,
            stdout: output.out.toString(),
            stderr: output.err.toString()
          })
      }
      this.client.once('close', onClientClose)
      this.pending.add(onClientClose)
      let opened: ClientChannel | undefined
      // From the request on: a channel the target never opens times out like a command that hangs.
      if (opts.timeoutMs !== undefined)
        timer = setTimeout(() => {
          opened?.close()
          finish(commandTimeoutError(this.target.label, what, opts.timeoutMs!))
        }, opts.timeoutMs)
      try {
        this.client.exec(wrapped, (e, channel) => {
          if (e) return finish(channelOpenError(this.target.label, what, e))
          opened = channel
          if (done) return void channel.close()
          collectOutput(channel, opts, output)
          channel.on('close', () => finish())
          sendStdin(channel, opts.stdin, finish)
        })
      } catch (e) {
        // ssh2 throws "Not connected" at once on a connection that just ended.
        finish(channelOpenError(this.target.label, what, e as Error))
      }
    })
  }

  /**
   * A new connection to the target through this one's own jump host chain, while that is up: a new
   * TCP connection from the jump host to the target and a new SSH handshake and login there --
   * what a confirmation must prove of a new system -- without dialling the jump host again, which
   * the deploy does not change (a fleet's targets go through their shared chain the same way).
   * This host is closed and its chain handed to the new one. Undefined when there is no such chain
   * or it is down (dial both hops then); throws when the target cannot be reached through it.
   */
  async redialTarget(): Promise<RemoteHost | undefined> {
    const jump = this.jump
    if (!jump?.owned || !jump.chain.alive || this.closed) return undefined
    const channel = await forwardThrough(
      jump.chain.last,
      jump.chain.lastHop,
      this.target,
      this.opts.timeoutMs
    )
    let client: Client
    try {
      client = await connectClient(this.target, this.opts, channel)
    } catch (e) {
      channel.close()
      throw e
    }
    if (this.closed || !jump.chain.alive) {
      client.end()
      return undefined
    }
    // Handed over: closing this host now ends only its own session to the target.
    this.jump = { ...jump, owned: false, release: () => undefined }
    this.close()
    return new RemoteHost(this.target, this.sudo, client, this.opts, { ...jump, tunnel: channel })
  }

  /** The connection is gone: says which hop and what was being done, in one line (never the script). */
  private lossError(what = 'running a command'): ActionError {
    return new ActionError(
      `lost the SSH connection to ${this.target.label} while ${what}${this.lostReason ? ` (${this.lostReason.replace(/\s+/g, ' ')})` : ''}`,
      'Check the link to the target (and the jump host), then re-run: a re-run copies only what is still missing.',
      'connect'
    )
  }

  close(): void {
    this.closed = true
    try {
      this.client.end()
    } catch (e) {
      core.debug(`closing the target connection: ${errorMessage(e)}`)
    }
    this.abandon()
    if (this.jump) {
      this.stopWatchingJump?.()
      this.jump.release()
    }
  }

  /**
   * Gives up on this connection at once, without waiting for ssh2 to see it close: through a
   * shared jump host chain, a target whose link died mid-copy never closes (the jump host cannot
   * flush what it holds for it, so it answers neither the disconnect nor the channel's close), and
   * every command on it would wait forever. Its commands fail now; the tunnel is told to close.
   */
  private abandon(): void {
    for (const fail of [...this.pending]) fail()
    // An owned chain ends with this host (close), and its tunnel with it.
    if (this.jump && !this.jump.owned)
      try {
        this.jump.tunnel.close()
      } catch (e) {
        core.debug(`closing the tunnel to the target: ${errorMessage(e)}`)
      }
  }
}

/**
 * One connection to a jump host (or chain of them), shared by the deploys of several machines
 * behind it (each gets its own forwarded channel and SSH session to its target). Re-dialled when it
 * was lost; closed when the last user releases it.
 */
export class SharedJump {
  private chain: JumpChain | undefined
  private connecting: Promise<JumpChain> | undefined
  private users = 0

  constructor(
    readonly hops: Endpoint[],
    private readonly opts: ConnectOptions
  ) {}

  async acquire(): Promise<JumpChain> {
    this.users++
    try {
      if (this.chain) return this.chain
      this.connecting ??= JumpChain.connect(this.hops, this.opts)
        .then(chain => {
          this.chain = chain
          const stop = chain.onLost(() => {
            if (this.chain === chain) this.chain = undefined
            stop()
          })
          return chain
        })
        .finally(() => (this.connecting = undefined))
      return await this.connecting
    } catch (e) {
      this.users--
      throw e
    }
  }

  /**
   * Keeps the connection open (once dialled) until the returned function is called, also while no
   * machine uses it: a fleet's batches, rollbacks and prunes then share one connection instead of
   * re-dialling the jump host whenever every machine happened to be done at once.
   */
  hold(): () => void {
    this.users++
    let released = false
    return () => {
      if (!released) this.release()
      released = true
    }
  }

  release(): void {
    this.users--
    if (this.users <= 0 && this.chain) {
      this.chain.end()
      this.chain = undefined
    }
  }
}

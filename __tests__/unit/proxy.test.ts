import { sshKeyPair } from './ssh-keys'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { ActionError } from '../../src/errors'
import { RemoteHost } from '../../src/ssh/connection'
import { Endpoint } from '../../src/ssh/endpoint'
import { expandProxyCommand, ProxyProcess, proxyTemplateProblem } from '../../src/ssh/proxy'

const tokens = { host: 'pi.lan', port: 2222, user: 'root', name: 'pi3' }

describe('proxy-command tokens', () => {
  it('expands %h %p %r %n and %% in one pass', () => {
    expect(expandProxyCommand('cloudflared access ssh --hostname %h', tokens)).toBe(
      'cloudflared access ssh --hostname pi.lan'
    )
    expect(expandProxyCommand('ssh -W %h:%p -l %r bastion # %n 100%%', tokens)).toBe(
      'ssh -W pi.lan:2222 -l root bastion # pi3 100%'
    )
    // One pass: %% becomes a literal % that is not read again as a token.
    expect(expandProxyCommand('echo %%h', tokens)).toBe('echo %h')
  })

  it('refuses an unknown token and a lone % at the end', () => {
    expect(proxyTemplateProblem('nc %h %x')).toMatch(/unknown token %x/)
    expect(proxyTemplateProblem('nc %h 100%')).toMatch(/lone "%"/)
    expect(proxyTemplateProblem('nc %h %p')).toBeUndefined()
    expect(() => expandProxyCommand('nc %q', tokens)).toThrow(/unknown token %q/)
  })

  it('never lets a value reach the shell as code: values that are not a host, user or name are refused', () => {
    for (const bad of ['$(touch MARKER)', 'a;b', '`id`', 'a b', "x'y"]) {
      expect(() => expandProxyCommand('nc %h %p', { ...tokens, host: bad })).toThrow(/not a host name/)
      expect(() => expandProxyCommand('nc %r', { ...tokens, user: bad })).toThrow(/not a user name/)
      expect(() => expandProxyCommand('nc %n', { ...tokens, name: bad })).toThrow(/not a plain machine name/)
    }
    // IPv6 literals are fine (quoted if they needed it; they do not).
    expect(expandProxyCommand('nc %h %p', { ...tokens, host: 'fe80::1' })).toBe('nc fe80::1 2222')
  })
})

describe('the proxy process', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-proxy-'))

  it('does not see the action inputs (the key) in its environment', async () => {
    process.env['INPUT_SSH-PRIVATE-KEY'] = 'secret-key-material'
    try {
      const p = new ProxyProcess(`env > ${dir}/env`)
      await p.exited
      expect(fs.readFileSync(`${dir}/env`, 'utf8')).not.toContain('secret-key-material')
    } finally {
      delete process.env['INPUT_SSH-PRIVATE-KEY']
    }
  })

  it('kill ends it and what it started (its process group)', async () => {
    const p = new ProxyProcess(`sleep 300 & echo $! > ${dir}/child; wait`)
    for (let i = 0; i < 100 && !fs.existsSync(`${dir}/child`); i++) await new Promise(r => setTimeout(r, 50))
    const child = Number(fs.readFileSync(`${dir}/child`, 'utf8'))
    p.kill()
    expect(await p.exited).toMatch(/signal SIGTERM/)
    // The grandchild got the same signal: gone (or a zombie for an instant).
    let alive = true
    for (let i = 0; i < 100 && alive; i++) {
      try {
        process.kill(child, 0)
        const stat = fs.readFileSync(`/proc/${child}/stat`, 'utf8')
        alive = !/^\d+ \(.*\) Z/.test(stat)
      } catch {
        alive = false
      }
      if (alive) await new Promise(r => setTimeout(r, 50))
    }
    expect(alive).toBe(false)
  })
})

describe('connecting through proxy-command', () => {
  const key = sshKeyPair('ed25519').private
  const ep: Endpoint = {
    host: '10.0.0.9',
    port: 22,
    user: 'root',
    key: { text: key },
    label: 'target root@10.0.0.9'
  }
  const connect = (proxyCommand: string, timeoutMs = 20_000) =>
    RemoteHost.connect(ep, undefined, {
      knownHosts: [],
      insecureSkipHostKeyCheck: true,
      timeoutMs,
      proxyCommand
    })

  it('a proxy that exits fails at once (not at the timeout), with its status and what it printed', async () => {
    const started = Date.now()
    const e = await connect('echo "no route to %h" >&2; exit 3').catch((x: unknown) => x)
    expect(e).toBeInstanceOf(ActionError)
    expect((e as ActionError).message).toMatch(
      /proxy-command for target root@10\.0\.0\.9 ended \(exit status 3\) before the SSH connection was up \(through proxy-command, which printed: no route to 10\.0\.0\.9\)/
    )
    expect(Date.now() - started).toBeLessThan(10_000)
  })

  it('a proxy that prints nothing fails at connect-timeout, and is ended', async () => {
    const pidFile = path.join(os.tmpdir(), `nda-proxy-hang-${process.pid}`)
    const e = await connect(`echo $$ > ${pidFile}; exec sleep 300`, 1500).catch((x: unknown) => x)
    expect((e as ActionError).message).toMatch(
      /did not answer within the connect timeout \(through proxy-command/
    )
    const pid = Number(fs.readFileSync(pidFile, 'utf8'))
    let alive = true
    for (let i = 0; i < 100 && alive; i++) {
      try {
        process.kill(pid, 0)
        await new Promise(r => setTimeout(r, 50))
      } catch {
        alive = false
      }
    }
    expect(alive).toBe(false)
  })

  it('a proxy that answers garbage fails with the SSH error, through the proxy', async () => {
    // SSH allows lines before the version string: garbage without one ends at connect-timeout.
    const e = await connect("printf 'HTTP/1.1 400 Bad Request\\r\\n\\r\\n'; exec sleep 300", 2000).catch(
      (x: unknown) => x
    )
    expect(e).toBeInstanceOf(ActionError)
    expect((e as ActionError).message).toMatch(
      /did not answer within the connect timeout \(through proxy-command/
    )
    // A proxy that speaks something else than SSH at once: ssh2's error, through the proxy.
    const e2 = await connect("printf 'SSH-1.0-nonsense\\r\\n'; exec sleep 300", 5000).catch((x: unknown) => x)
    expect((e2 as ActionError).message).toMatch(/through proxy-command/)
  }, 20_000)
})

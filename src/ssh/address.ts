import { isIP } from 'net'

/** `[user@]host[:port]` as written in inputs; absent parts stay undefined (defaults come later). */
export interface HostAddress {
  user?: string
  host: string
  port?: number
}

const HOSTNAME =
  /^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?$/
const USER = /^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$/

export function isValidHost(host: string): boolean {
  return isIP(host) !== 0 || HOSTNAME.test(host)
}

export function isValidUser(user: string): boolean {
  return USER.test(user)
}

/** Parses a port number; returns undefined when `s` is not an integer in 1..65535. */
export function parsePort(s: string): number | undefined {
  if (!/^[0-9]{1,5}$/.test(s)) return undefined
  const n = Number(s)
  return n >= 1 && n <= 65535 ? n : undefined
}

/**
 * Parses `[user@]host[:port]`, with IPv6 addresses in brackets (`[fe80::1]:2222`); a bare IPv6
 * address without a port is accepted too. Throws an Error naming what is wrong.
 */
export function parseHostAddress(s: string, what: string): HostAddress {
  const at = s.lastIndexOf('@')
  const user = at >= 0 ? s.slice(0, at) : undefined
  let rest = at >= 0 ? s.slice(at + 1) : s
  if (user !== undefined && !isValidUser(user))
    throw new Error(`${what}: ${JSON.stringify(user)} is not a valid user name`)
  let port: number | undefined
  let host: string
  if (rest.startsWith('[')) {
    const close = rest.indexOf(']')
    if (close < 0) throw new Error(`${what}: missing "]" after the IPv6 address`)
    host = rest.slice(1, close)
    rest = rest.slice(close + 1)
    if (rest !== '') {
      if (!rest.startsWith(':')) throw new Error(`${what}: expected ":port" after "]"`)
      port = parsePort(rest.slice(1))
      if (port === undefined)
        throw new Error(`${what}: ${JSON.stringify(rest.slice(1))} is not a port (1-65535)`)
    }
    if (isIP(host) !== 6) throw new Error(`${what}: ${JSON.stringify(host)} is not an IPv6 address`)
  } else if (isIP(rest) === 6) {
    host = rest
  } else {
    const colon = rest.lastIndexOf(':')
    if (colon >= 0) {
      port = parsePort(rest.slice(colon + 1))
      if (port === undefined)
        throw new Error(`${what}: ${JSON.stringify(rest.slice(colon + 1))} is not a port (1-65535)`)
      rest = rest.slice(0, colon)
    }
    host = rest
    if (!isValidHost(host))
      throw new Error(`${what}: ${JSON.stringify(host)} is not a host name or IP address`)
  }
  return { user, host, port }
}

/** For messages: user@host:port, with IPv6 in brackets. */
export function formatAddress(a: { user?: string; host: string; port?: number }): string {
  const host = isIP(a.host) === 6 ? `[${a.host}]` : a.host
  return `${a.user ? a.user + '@' : ''}${host}${a.port && a.port !== 22 ? ':' + a.port : ''}`
}

/**
 * Parses a chain of hops as OpenSSH's ProxyJump writes it: `[user@]host[:port]` separated by commas
 * and/or newlines, the first hop dialled first. Throws an Error naming the hop that is wrong.
 */
export function parseHostChain(s: string, what: string, maxHops: number): HostAddress[] {
  const parts = s
    .split(/[,\n]/)
    .map(p => p.trim())
    .filter(p => p !== '')
  if (parts.length === 0) throw new Error(`${what}: no host given`)
  if (parts.length > maxHops)
    throw new Error(`${what}: ${parts.length} hops; at most ${maxHops} are supported`)
  return parts.map((p, n) => parseHostAddress(p, parts.length > 1 ? `${what} (hop ${n + 1})` : what))
}

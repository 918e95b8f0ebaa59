import { existsSync } from 'fs'
import * as path from 'path'
import { utils as ssh2utils } from 'ssh2'
import { checksWindowSeconds } from './deploy/activate'
import { canReboot, goalOf, runsNewSystem } from './deploy/goal'
import { publishUriProblem } from './cache/publish'
import { deployPlanProblems, shardMachines } from './nix/deploy-plan'
import { COMPRESSIONS, CompressionSetting } from './deploy/compression'
import { DEFAULT_REBOOT_TIMEOUT_SECONDS, REBOOT_WHENS, RebootWhen } from './deploy/reboot'
import { errorMessage, InputError } from './errors'
import { FlakeTarget, parseFlakeTarget } from './nix/flake'
import { isStorePath } from './nix/store-path'
import { HostAddress, isValidUser, parseHostAddress, parseHostChain, parsePort } from './ssh/address'
import { KnownHostLine, parseKnownHosts } from './ssh/known-hosts'
import { proxyTemplateProblem } from './ssh/proxy'
import { parseRollout, Rollout } from './rollout'
import { parseSigningKey, SigningKey } from './cache/signing'

export { MODES } from './modes'
export type { Mode } from './modes'
export type { Source } from './nix/source'
export type { BinfmtSetting } from './nix/binfmt-setup'
import { MODES, Mode } from './modes'
import { Baseline, Source } from './nix/source'
import { BinfmtSetting } from './nix/binfmt-setup'

export type { PrivateKey } from './ssh/endpoint'
import { PrivateKey, splitPrivateKeys } from './ssh/endpoint'

/** Everything the action reads from `with:`, validated once. Absent optional values stay undefined. */
export interface Inputs {
  source: Source
  /** The flake target when source is a flake (kept apart for the phases that only flakes have). */
  flake?: FlakeTarget
  mode: Mode
  /** target-host with target-user/target-port (or `user@host:port` written into target-host). */
  target?: HostAddress
  /** target-port / target-user as given (with network, they override one machine's file values). */
  targetOverride: { port?: number; user?: string }
  sshKey?: PrivateKey
  knownHosts: KnownHostLine[]
  /** jump-host: the chain of jump hosts, the first dialled from the runner (empty: none). */
  jumpHosts: HostAddress[]
  /** jump-host-key: none (ssh-private-key for every hop), one for every hop, or one per hop. */
  jumpHostKeys: PrivateKey[]
  /** OpenSSH-style ProxyCommand for the first hop (tokens %h %p %r %n %% expanded per connection). */
  proxyCommand?: string
  insecureSkipHostKeyCheck: boolean
  /** Extra Nix settings for the runner's nix calls, as name/value pairs (`--option name value`). */
  nixOptions: Array<[string, string]>
  binfmt: BinfmtSetting
  connectTimeoutSeconds: number
  /** undefined: on for switch and test (the code's default). */
  magicRollback?: boolean
  confirmTimeoutSeconds: number
  activationTimeoutSeconds: number
  /** Commands run on the target after activation, one per line; all must succeed. */
  healthChecks: string[]
  healthTimeoutSeconds: number
  lockTimeoutSeconds: number
  sudo: 'auto' | 'true' | 'false'
  /** undefined: keep every generation. */
  keepGenerations?: number
  compression: CompressionSetting
  /** Keep the runner's store warm with @actions/cache. */
  cache: boolean
  /** Cache key prefix (undefined: nix-deploy-<platform>). */
  cacheKey?: string
  /** signing-key: signs the store cache's entries; only entries it signed are restored for a deploy. */
  signingKey?: SigningKey
  /** The whole run's deadline (undefined: none). */
  timeoutSeconds?: number
  /** Baseline for the package diff in build mode: a store path, or a flake configuration. */
  diffAgainst?: Baseline
  /** github-token: for the runner's Nix fetching github: flakes (access-tokens); never in argv or env. */
  githubToken?: string
  /** Machines deployed at the same time (network with several machines). */
  parallel: number
  /** Stop starting other machines' deploys once one failed. */
  failFast: boolean
  /** With network: all at once, a canary first, or batches. */
  rollout: Rollout
  /** With network: when a machine fails, put the machines this run deployed back on what they ran. */
  rollbackFleet: boolean
  /** mode build: the binary cache to publish to, and the shards of the deploy plan. */
  publish?: { uri: string; shards: number }
  /** Let the target fetch what its own substituters have before copying the rest. */
  substituteOnDestination: boolean
  /** Reboot into the new system: never, when its kernel/initrd/modules/parameters change, always. */
  reboot: RebootWhen
  /** How long a reboot may take, until the target answers again with a new boot id. */
  rebootTimeoutSeconds: number
}

/** Every input the action declares, in action.yml order (docs/inputs.md and a test check the list). */
export const INPUT_NAMES = [
  'flake',
  'configuration',
  'network',
  'machines',
  'nixpkgs',
  'system',
  'mode',
  'target-host',
  'target-port',
  'target-user',
  'ssh-private-key',
  'ssh-key-passphrase',
  'known-hosts',
  'jump-host',
  'jump-host-key',
  'proxy-command',
  'insecure-skip-host-key-check',
  'nix-options',
  'binfmt',
  'connect-timeout',
  'magic-rollback',
  'confirm-timeout',
  'activation-timeout',
  'health-checks',
  'health-timeout',
  'lock-timeout',
  'sudo',
  'keep-generations',
  'compression',
  'diff-against',
  'github-token',
  'timeout',
  'cache',
  'cache-key',
  'signing-key',
  'parallel',
  'fail-fast',
  'rollout',
  'rollback-fleet',
  'publish-to',
  'shards',
  'deploy-plan',
  'shard',
  'substitute-on-destination',
  'reboot',
  'reboot-timeout'
] as const
export type InputName = (typeof INPUT_NAMES)[number]

/** Inputs whose values are secrets: masked before anything else happens. */
export const SECRET_INPUTS: readonly InputName[] = [
  'ssh-private-key',
  'ssh-key-passphrase',
  'jump-host-key',
  'github-token',
  'signing-key'
]

function parseBoolean(name: string, v: string, problems: string[]): boolean {
  if (v === '' || /^(false|False|FALSE)$/.test(v)) return false
  if (/^(true|True|TRUE)$/.test(v)) return true
  problems.push(`${name}: ${JSON.stringify(v)} is not true or false`)
  return false
}

/** A whole number from 1 to `max` (`what` names it in the message), or `fallback` when empty. */
function parseCount(
  name: string,
  text: string,
  fallback: number,
  max: number,
  problems: string[],
  what = 'a whole number'
): number {
  if (text === '') return fallback
  const n = Number(text)
  if (!/^[0-9]+$/.test(text) || n < 1 || n > max) {
    problems.push(`${name}: ${JSON.stringify(text)} is not ${what} from 1 to ${max}`)
    return fallback
  }
  return n
}

function parseSeconds(name: string, text: string, fallback: number, max: number, problems: string[]): number {
  return parseCount(name, text, fallback, max, problems, 'a number of seconds')
}

export function parseNixOptions(text: string, problems: string[]): Array<[string, string]> {
  const options: Array<[string, string]> = []
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim()
    if (line === '' || line.startsWith('#')) return
    const m = /^([A-Za-z][A-Za-z0-9-]*)\s*=\s*(.*)$/.exec(line)
    if (!m) problems.push(`nix-options line ${i + 1}: expected "name = value", got ${JSON.stringify(line)}`)
    else if (SECRET_NIX_SETTINGS.has(m[1].replace(/^extra-/, '')))
      // Its value is not echoed: the line is a secret in the wrong place.
      problems.push(
        `nix-options line ${i + 1}: ${m[1]} holds a secret, and nix-options go onto the nix command line (visible to every process on the runner) and into the post step's state. Pass a GitHub token as github-token instead (masked, handed to Nix outside its argv), and rotate the token you put here`
      )
    else options.push([m[1], m[2]])
  })
  return options
}

/** Nix settings whose values are secrets (as in `extra-access-tokens` too): refused in nix-options. */
const SECRET_NIX_SETTINGS = new Set(['access-tokens'])

function checkKey(name: string, key: PrivateKey, problems: string[]): void {
  // ssh2's own parser: the same code that will use the key, so what passes here connects later.
  const parsed = ssh2utils.parseKey(key.text, key.passphrase)
  if (!(parsed instanceof Error)) return
  const msg = parsed.message
  if (/no passphrase/i.test(msg))
    problems.push(
      `${name}: the key is encrypted; set ssh-key-passphrase (from a secret) or use an unencrypted deploy key`
    )
  else if (key.passphrase !== undefined && /decrypt|passphrase|bad/i.test(msg))
    problems.push(`${name}: could not decrypt the key with ssh-key-passphrase (wrong passphrase?)`)
  else
    problems.push(
      `${name}: not a private key ssh2 can read (${msg}). Paste the whole private key file, including the BEGIN/END lines`
    )
}

type Get = (name: InputName) => string

/** The longest jump-host chain taken (OpenSSH has no limit; each hop adds a handshake and a round trip). */
export const MAX_JUMP_HOSTS = 8

/**
 * Reads and validates all inputs. `get` returns an input's trimmed value, '' when unset
 * (core.getInput). Collects every problem and throws one InputError listing them all.
 */
export function readInputs(get: Get): Inputs {
  const problems: string[] = []
  const flake = readFlake(get, problems)
  const source = readSource(get, flake, problems)
  const mode = readMode(get, problems)
  const connection = readConnection(get, problems)
  const nixOptions = parseNixOptions(get('nix-options'), problems)
  const binfmtText = readAutoTrueFalse(get, 'binfmt', problems)
  const timeouts = readTimeouts(get, problems)
  const healthChecks = readHealthChecks(get)
  if (get('confirm-timeout') === '' && healthChecks.length > 0)
    timeouts.confirmTimeoutSeconds = confirmWindow(timeouts)
  const sudoText = readAutoTrueFalse(get, 'sudo', problems)
  const optional = readOptional(get, problems)
  const timeoutSeconds =
    get('timeout') === '' ? undefined : parseSeconds('timeout', get('timeout'), 0, 86400, problems)
  const reboot = readReboot(get, mode, problems)
  checkCombinations(get, problems, {
    mode,
    source,
    target: connection.target,
    sshKey: connection.sshKey,
    jumpHosts: connection.jumpHosts,
    knownHostCount: connection.knownHosts.length,
    insecureSkipHostKeyCheck: connection.insecureSkipHostKeyCheck,
    healthChecks,
    ...reboot,
    ...timeouts
  })
  const fleet = readFleet(get, mode, problems)
  const substituteText = get('substitute-on-destination')
  const substituteOnDestination =
    substituteText === '' ? true : parseBoolean('substitute-on-destination', substituteText, problems)

  if (problems.length > 0) throw new InputError(problems)
  return {
    source: source!,
    flake,
    mode: mode as Mode,
    ...connection,
    nixOptions,
    binfmt: binfmtText as BinfmtSetting,
    ...timeouts,
    healthChecks,
    sudo: sudoText as Inputs['sudo'],
    ...optional,
    timeoutSeconds,
    ...fleet,
    substituteOnDestination,
    ...reboot
  }
}

function readMode(get: Get, problems: string[]): Mode | undefined {
  const modeText = get('mode') || 'switch'
  const mode = (MODES as readonly string[]).includes(modeText) ? (modeText as Mode) : undefined
  if (!mode) problems.push(`mode: ${JSON.stringify(modeText)} is not one of ${MODES.join(', ')}`)
  return mode
}

/** Where and how to connect: the target, the keys and jump hosts, the proxy, and host key checking. */
function readConnection(
  get: Get,
  problems: string[]
): Pick<
  Inputs,
  | 'target'
  | 'targetOverride'
  | 'sshKey'
  | 'jumpHosts'
  | 'jumpHostKeys'
  | 'proxyCommand'
  | 'knownHosts'
  | 'insecureSkipHostKeyCheck'
> {
  const { target, targetOverride } = readTarget(get, problems)
  const keys = readKeys(get, problems)
  const insecureSkipHostKeyCheck = parseBoolean(
    'insecure-skip-host-key-check',
    get('insecure-skip-host-key-check'),
    problems
  )
  const proxyCommand = readProxyCommand(get, problems)
  const known = parseKnownHosts(get('known-hosts'))
  problems.push(...known.errors)
  return { target, targetOverride, ...keys, proxyCommand, knownHosts: known.lines, insecureSkipHostKeyCheck }
}

/** binfmt and sudo: auto (when unset), true or false. */
function readAutoTrueFalse(get: Get, name: 'binfmt' | 'sudo', problems: string[]): string {
  const text = get(name) || 'auto'
  if (!['auto', 'true', 'false'].includes(text))
    problems.push(`${name}: ${JSON.stringify(text)} is not one of auto, true, false`)
  return text
}

/** health-checks: one command a line; blank lines and # comments are left out. */
function readHealthChecks(get: Get): string[] {
  return get('health-checks')
    .split(/\r?\n/)
    .map(l => l.trim())
    .filter(l => l !== '' && !l.startsWith('#'))
}

/** How a network's machines are deployed together: parallel, fail-fast, rollout, rollback-fleet. */
function readFleet(
  get: Get,
  mode: Mode | undefined,
  problems: string[]
): Pick<Inputs, 'parallel' | 'failFast' | 'rollout' | 'rollbackFleet' | 'publish'> {
  const parallel = parseCount('parallel', get('parallel'), 4, 64, problems)
  const failFast = parseBoolean('fail-fast', get('fail-fast'), problems)
  const rollout = parseRollout(get('rollout'), problems)
  const rollbackFleet = parseBoolean('rollback-fleet', get('rollback-fleet'), problems)
  return { parallel, failFast, rollout, rollbackFleet, publish: readPublish(get, mode, problems) }
}

/** publish-to and shards: a build that publishes, signed with signing-key. */
function readPublish(get: Get, mode: Mode | undefined, problems: string[]): Inputs['publish'] {
  const uri = get('publish-to').trim()
  const shards = parseCount('shards', get('shards'), 1, 256, problems)
  if (uri === '') return undefined
  const problem = publishUriProblem(uri)
  if (problem) problems.push(problem)
  if (mode && goalOf(mode).connects)
    problems.push(
      `publish-to is for mode build (the job that builds once for the fleet's deploy jobs), not mode ${mode}`
    )
  if (get('signing-key') === '')
    problems.push(
      'publish-to needs signing-key: the targets substitute only paths signed by a key they trust'
    )
  return { uri, shards }
}

function readFlake(get: Get, problems: string[]): FlakeTarget | undefined {
  const text = get('flake')
  if (text === '') return undefined
  try {
    return parseFlakeTarget(text)
  } catch (e) {
    problems.push(errorMessage(e))
    return undefined
  }
}

/** proxy-command: one line whose tokens are OpenSSH's (expanded per connection, see ssh/proxy.ts). */
function readProxyCommand(get: Get, problems: string[]): string | undefined {
  const text = get('proxy-command').trim()
  if (text === '') return undefined
  const problem = proxyTemplateProblem(text)
  if (problem) problems.push(problem)
  if (text.includes('\n')) problems.push('proxy-command: one line only (it is run with sh -c)')
  return text
}

/** reboot and reboot-timeout; a reboot in a mode that does not change what the target boots is refused. */
function readReboot(
  get: Get,
  mode: Mode | undefined,
  problems: string[]
): Pick<Inputs, 'reboot' | 'rebootTimeoutSeconds'> {
  const text = get('reboot') || 'never'
  const whens: readonly string[] = REBOOT_WHENS
  if (!whens.includes(text))
    problems.push(`reboot: ${JSON.stringify(text)} is not one of ${REBOOT_WHENS.join(', ')}`)
  const reboot = (whens.includes(text) ? text : 'never') as RebootWhen
  // A build ignores it (warned in the plan): the same workflow builds pull requests and deploys.
  const goal = mode && goalOf(mode)
  if (reboot !== 'never' && goal && goal.connects && !canReboot(goal))
    problems.push(
      `reboot: ${reboot} cannot be used with mode ${mode}: a reboot boots the system profile, which ${mode} does not set. Use mode switch or boot (needs-reboot is reported in every mode)`
    )
  const rebootTimeoutSeconds = parseSeconds(
    'reboot-timeout',
    get('reboot-timeout'),
    DEFAULT_REBOOT_TIMEOUT_SECONDS,
    3600,
    problems
  )
  return { reboot, rebootTimeoutSeconds }
}

/**
 * Defaults must be valid together: with health checks, the target's confirmation window, when not
 * set, leaves room for the checks and the confirmation's new connection (both hops, at worst).
 */
function confirmWindow(t: Timeouts): number {
  return Math.max(t.confirmTimeoutSeconds, checksWindowSeconds(t))
}

/** target-host, and target-port/target-user (which also override a network file's, for one machine). */
function readTarget(get: Get, problems: string[]): Pick<Inputs, 'target' | 'targetOverride'> {
  let target: HostAddress | undefined
  const targetHost = get('target-host')
  if (targetHost !== '')
    try {
      target = parseHostAddress(targetHost, 'target-host')
    } catch (e) {
      problems.push(errorMessage(e))
    }
  const targetOverride: Inputs['targetOverride'] = {}
  const targetPort = get('target-port')
  if (targetPort !== '') {
    const port = parsePort(targetPort)
    if (port === undefined)
      problems.push(`target-port: ${JSON.stringify(targetPort)} is not a port (1-65535)`)
    else if (target?.port !== undefined && target.port !== port)
      problems.push(`target-port ${port} contradicts the port in target-host (${target.port}); set only one`)
    else {
      targetOverride.port = port
      if (target) target.port = port
    }
  }
  const targetUser = get('target-user')
  if (targetUser !== '') {
    if (!isValidUser(targetUser))
      problems.push(`target-user: ${JSON.stringify(targetUser)} is not a valid user name`)
    else if (target?.user !== undefined && target.user !== targetUser)
      problems.push(
        `target-user ${targetUser} contradicts the user in target-host (${target.user}); set only one`
      )
    else {
      targetOverride.user = targetUser
      if (target) target.user = targetUser
    }
  }

  return { target, targetOverride }
}

/** The deploy key (with its passphrase), the jump hosts and their keys. */
function readKeys(get: Get, problems: string[]): Pick<Inputs, 'sshKey' | 'jumpHosts' | 'jumpHostKeys'> {
  const passphrase = get('ssh-key-passphrase') || undefined
  const keyText = get('ssh-private-key')
  const sshKey: PrivateKey | undefined = keyText ? { text: keyText, passphrase } : undefined
  if (sshKey) checkKey('ssh-private-key', sshKey, problems)
  else if (passphrase) problems.push('ssh-key-passphrase is set but ssh-private-key is empty')

  const jumpText = get('jump-host')
  let jumpHosts: HostAddress[] = []
  if (jumpText !== '')
    try {
      jumpHosts = parseHostChain(jumpText, 'jump-host', MAX_JUMP_HOSTS)
    } catch (e) {
      problems.push(errorMessage(e))
    }
  const jumpKeyText = get('jump-host-key')
  const jumpHostKeys: PrivateKey[] = []
  if (jumpKeyText !== '') {
    if (jumpText === '') problems.push('jump-host-key is set but jump-host is empty')
    const split = splitPrivateKeys(jumpKeyText)
    const texts = split.length > 1 ? split : [jumpKeyText]
    texts.forEach((text, n) => {
      // An encrypted jump host key is tried with ssh-key-passphrase too.
      const key = { text, passphrase }
      jumpHostKeys.push(key)
      checkKey(
        texts.length > 1 ? `jump-host-key (key ${n + 1} of ${texts.length})` : 'jump-host-key',
        key,
        problems
      )
    })
    if (texts.length > 1 && jumpHosts.length > 0 && texts.length !== jumpHosts.length)
      problems.push(
        `jump-host-key holds ${texts.length} keys but jump-host has ${jumpHosts.length} hop${jumpHosts.length > 1 ? 's' : ''}: give one key for all hops, or one key per hop in the order of jump-host`
      )
  }

  return { sshKey, jumpHosts, jumpHostKeys }
}

type Timeouts = Pick<
  Inputs,
  | 'connectTimeoutSeconds'
  | 'magicRollback'
  | 'confirmTimeoutSeconds'
  | 'activationTimeoutSeconds'
  | 'healthTimeoutSeconds'
  | 'lockTimeoutSeconds'
>

function readTimeouts(get: Get, problems: string[]): Timeouts {
  const connectTimeoutSeconds = parseSeconds('connect-timeout', get('connect-timeout'), 30, 600, problems)
  const magicText = get('magic-rollback')
  const magicRollback = magicText === '' ? undefined : parseBoolean('magic-rollback', magicText, problems)
  const confirmTimeoutSeconds = parseSeconds('confirm-timeout', get('confirm-timeout'), 30, 3600, problems)
  const activationTimeoutSeconds = parseSeconds(
    'activation-timeout',
    get('activation-timeout'),
    600,
    7200,
    problems
  )
  const healthTimeoutSeconds = parseSeconds('health-timeout', get('health-timeout'), 60, 3600, problems)
  const lockTimeoutSeconds = parseSeconds('lock-timeout', get('lock-timeout'), 300, 7200, problems)
  return {
    connectTimeoutSeconds,
    magicRollback,
    confirmTimeoutSeconds,
    activationTimeoutSeconds,
    healthTimeoutSeconds,
    lockTimeoutSeconds
  }
}

/** keep-generations: a whole number from 1 to 10000; unset (or invalid), undefined: keep all. */
function readKeepGenerations(get: Get, problems: string[]): number | undefined {
  const keepText = get('keep-generations')
  if (keepText === '') return undefined
  const keepGenerations = Number(keepText)
  if (!/^[0-9]+$/.test(keepText) || keepGenerations < 1 || keepGenerations > 10000) {
    problems.push(
      `keep-generations: ${JSON.stringify(keepText)} is not a whole number of at least 1 (leave it empty to keep all)`
    )
    return undefined
  }
  return keepGenerations
}

/** diff-against: a store path (starting /nix/store/), else a flake configuration. */
function readDiffAgainst(get: Get, problems: string[]): Inputs['diffAgainst'] {
  const diffText = get('diff-against')
  if (diffText === '') return undefined
  if (diffText.startsWith('/nix/store/')) {
    if (isStorePath(diffText)) return { storePath: diffText }
    problems.push(`diff-against: ${JSON.stringify(diffText)} is not a valid store path`)
    return undefined
  }
  try {
    return { flake: parseFlakeTarget(diffText) }
  } catch (e) {
    problems.push(`diff-against: ${errorMessage(e)}`)
    return undefined
  }
}

/** keep-generations, compression, diff-against, github-token, cache, cache-key, signing-key. */
function readOptional(
  get: Get,
  problems: string[]
): Pick<
  Inputs,
  'keepGenerations' | 'compression' | 'diffAgainst' | 'githubToken' | 'cache' | 'cacheKey' | 'signingKey'
> {
  const keepGenerations = readKeepGenerations(get, problems)
  const compressionText = get('compression') || 'auto'
  if (!(COMPRESSIONS as readonly string[]).includes(compressionText))
    problems.push(`compression: ${JSON.stringify(compressionText)} is not one of ${COMPRESSIONS.join(', ')}`)
  const diffAgainst = readDiffAgainst(get, problems)
  // Left as written (`\${{ github.token }}`): a local run (@github/local-action, act) that does not
  // evaluate action.yml's default. No token then, as with an empty one.
  const tokenText = get('github-token')
  const githubToken = tokenText === '' || /^\$\{\{.*\}\}$/.test(tokenText) ? undefined : tokenText
  // One nix.conf value: a space or newline would add settings of its own.
  if (githubToken !== undefined && !/^[A-Za-z0-9_.-]{1,1024}$/.test(githubToken))
    problems.push(
      'github-token: not a GitHub token (letters, digits, "_", "." and "-" only); pass ${{ github.token }} or a token from a secret'
    )
  const cacheText = get('cache')
  const cacheOn = cacheText === '' ? true : parseBoolean('cache', cacheText, problems)
  const cacheKey = get('cache-key') || undefined
  if (cacheKey !== undefined && !/^[A-Za-z0-9._-]{1,200}$/.test(cacheKey))
    problems.push(
      `cache-key: ${JSON.stringify(cacheKey)} must be letters, digits, ".", "_" and "-" (at most 200)`
    )
  const signingText = get('signing-key')
  const parsedKey = signingText === '' ? undefined : parseSigningKey(signingText)
  if (typeof parsedKey === 'string')
    problems.push(
      `signing-key: ${parsedKey}. Pass the secret key file's content from a secret; its public half goes to the targets' and caches' trusted-public-keys`
    )
  return {
    keepGenerations,
    compression: compressionText as CompressionSetting,
    diffAgainst,
    githubToken,
    cache: cacheOn,
    cacheKey,
    signingKey: typeof parsedKey === 'string' ? undefined : parsedKey
  }
}

/** Inputs that are each valid but do not go together. */
function checkCombinations(
  get: Get,
  problems: string[],
  i: Timeouts & {
    mode: Mode | undefined
    source: Source | undefined
    target: HostAddress | undefined
    sshKey: PrivateKey | undefined
    jumpHosts: HostAddress[]
    knownHostCount: number
    insecureSkipHostKeyCheck: boolean
    healthChecks: string[]
    reboot: RebootWhen
    rebootTimeoutSeconds: number
  }
): void {
  const { mode, source, target, sshKey, jumpHosts } = i
  const targetHost = get('target-host')
  const goal = mode && goalOf(mode)
  // The target waits confirm-timeout after activation; the checks must be able to finish before it.
  const runsNew = !!goal && runsNewSystem(goal, i.reboot !== 'never')
  const magicOn = i.magicRollback ?? runsNew
  // Only a confirm-timeout the user set can conflict (unset, it is worked out from health-timeout).
  if (
    magicOn &&
    i.healthChecks.length > 0 &&
    runsNew &&
    get('confirm-timeout') !== '' &&
    i.confirmTimeoutSeconds <= i.healthTimeoutSeconds
  )
    problems.push(
      `confirm-timeout (${i.confirmTimeoutSeconds} s) must be longer than health-timeout (${i.healthTimeoutSeconds} s): the target rolls back when no confirmation comes within confirm-timeout, and the checks run before the confirmation. Raise confirm-timeout, or leave it unset and it is worked out from health-timeout`
    )
  // A reboot's wait is made of logins: one that cannot fit in it would give up before it began.
  if (i.reboot !== 'never' && i.rebootTimeoutSeconds <= i.connectTimeoutSeconds)
    problems.push(
      `reboot-timeout (${i.rebootTimeoutSeconds} s) must be longer than connect-timeout (${i.connectTimeoutSeconds} s): after the reboot the action logs in again within reboot-timeout (on trial, the target waits that long for the login), and one login may take connect-timeout per hop. Raise reboot-timeout (a Pi on Wi-Fi or behind a tunnel needs a minute or more)`
    )
  // `build` never connects, so it needs none of the connection inputs.
  if (goal && goal.connects) {
    // A missing key, host or known-hosts is allowed where the goal builds without secrets (a fork
    // PR gets no secrets and no variables): the plan then makes the run a build, with a warning.
    // mode report's machines come from its plan, never from target-host (said above when it lacks one).
    if (
      !target &&
      targetHost === '' &&
      mode !== 'report' &&
      !goal.buildsWithoutSecrets &&
      !hasOwnTargets(source)
    )
      problems.push(`target-host is required for mode ${mode} (or use mode: build to only build)`)
    if (!sshKey && !goal.buildsWithoutSecrets)
      problems.push(`ssh-private-key is required for mode ${mode}: pass the deploy key from a secret`)
    if (sshKey && i.knownHostCount === 0 && !i.insecureSkipHostKeyCheck)
      problems.push(
        'known-hosts is required to verify the target (and jump host): add their lines from `ssh-keyscan`, checked out of band, or set insecure-skip-host-key-check: true (not recommended)'
      )
  }
  if (jumpHosts.length > 0 && targetHost === '' && !hasOwnTargets(source))
    problems.push('jump-host is set but target-host is empty')
  checkPlanCombinations(get, problems, mode, source)
}

/** deploy-plan with mode and the target inputs; mode report without a plan. */
function checkPlanCombinations(
  get: Get,
  problems: string[],
  mode: Mode | undefined,
  source: Source | undefined
): void {
  if (mode === 'report' && source && source.kind !== 'plan')
    problems.push(
      "mode report reads what the machines of a deploy plan run: give deploy-plan (the build job's output), not flake, configuration or network"
    )
  if (source?.kind === 'plan') {
    if (mode === 'build')
      problems.push(
        'mode build with deploy-plan: the plan is built already; give the deploy mode (e.g. switch)'
      )
    for (const n of ['target-host', 'target-port', 'target-user'] as const)
      if (get(n) !== '')
        problems.push(`${n} is not used with deploy-plan: the plan gives each machine its target`)
  }
}

/** A network file and a deploy plan give each machine its target: target-host is not needed. */
function hasOwnTargets(source: Source | undefined): boolean {
  return source?.kind === 'network' || source?.kind === 'plan'
}

/** A path input, relative to the workspace (where actions/checkout puts the repository). */
function workspacePath(p: string): string {
  return path.resolve(process.env.GITHUB_WORKSPACE || process.cwd(), p)
}

/** List inputs (network, machines): one per line, or separated by commas or spaces. */
function listInput(text: string): string[] {
  return text
    .split(/[\s,]+/)
    .map(s => s.trim())
    .filter(s => s !== '')
}

/**
 * nixpkgs as given: a NIX_PATH lookup (`<nixpkgs>`) as it is, else a path in the workspace, which
 * must be a nixpkgs checkout.
 */
function resolveNixpkgs(nixpkgsText: string, problems: string[]): string {
  if (/^<[A-Za-z0-9._/-]+>$/.test(nixpkgsText)) return nixpkgsText
  const nixpkgs = workspacePath(nixpkgsText)
  if (!existsSync(path.join(nixpkgs, 'nixos', 'lib', 'eval-config.nix')))
    problems.push(
      `nixpkgs: ${JSON.stringify(nixpkgsText)} is not a nixpkgs checkout (no nixos/lib/eval-config.nix in ${nixpkgs}); give a path to nixpkgs or "<nixpkgs>" for NIX_PATH`
    )
  return nixpkgs
}

/** machines: each a machine name, a glob of one, or an @tag. */
function checkMachines(machines: string[], problems: string[]): void {
  for (const m of machines)
    if (!/^(?:[A-Za-z0-9_*?.[\]-]+|@[A-Za-z0-9_.:-]+)$/.test(m))
      problems.push(
        `machines: ${JSON.stringify(m)} is not a machine name, glob (letters, digits, -, _, ., *, ?) or @tag`
      )
}

/** What to give when no source is given. */
function noSourceProblem(mode: string): string {
  // A fleet's last job runs `if: always()`: after a build job that failed, its plan is empty.
  return mode === 'report'
    ? "mode report needs deploy-plan (the build job's deploy-plan output), and it is empty: the build job failed or was skipped, so no shard deployed anything from a plan. Look at the build job; once it passes, this job reports on its plan"
    : 'flake is required: set it to "<flake>#<name>", e.g. ".#pi3" (or configuration: for a configuration.nix, or network: for NixOps network files)'
}

/**
 * flake, configuration, network or deploy-plan (exactly one), with nixpkgs / system / machines for
 * configuration and network, shard for deploy-plan.
 */
function readSource(
  get: (name: InputName) => string,
  flake: FlakeTarget | undefined,
  problems: string[]
): Source | undefined {
  const configuration = get('configuration')
  const networks = listInput(get('network'))
  const planText = get('deploy-plan').trim()
  const given = [
    flake && 'flake',
    configuration && 'configuration',
    networks.length > 0 && 'network',
    planText && 'deploy-plan'
  ].filter(Boolean)
  if (get('shard') !== '' && !planText) problems.push('shard is only used with deploy-plan')
  const nixpkgsText = get('nixpkgs') || '<nixpkgs>'
  const system = get('system') || 'aarch64-linux'
  const machines = listInput(get('machines'))
  if (given.length === 0) {
    if (get('flake') === '') problems.push(noSourceProblem(get('mode')))
    return undefined
  }
  if (given.length > 1) {
    problems.push(`set only one of flake, configuration, network, deploy-plan (got ${given.join(', ')})`)
    return undefined
  }
  if (planText) return readPlanSource(get, planText, problems)
  if (flake) {
    for (const n of ['nixpkgs', 'system', 'machines'] as const)
      if (get(n) !== '') problems.push(`${n} is only used with configuration or network, not with flake`)
    return { kind: 'flake', flake, label: flake.installable }
  }
  if (!/^[A-Za-z0-9_]+-[A-Za-z0-9_]+$/.test(system))
    problems.push(`system: ${JSON.stringify(system)} is not a Nix platform like aarch64-linux`)
  const nixpkgs = resolveNixpkgs(nixpkgsText, problems)
  const checkFile = (name: string, p: string): string => {
    const abs = workspacePath(p)
    if (!existsSync(abs)) problems.push(`${name}: ${JSON.stringify(p)} does not exist (looked for ${abs})`)
    return abs
  }
  if (configuration) {
    if (machines.length > 0) problems.push('machines is only used with network')
    const file = checkFile('configuration', configuration)
    return { kind: 'configuration', configuration: file, nixpkgs, system, label: configuration }
  }
  checkMachines(machines, problems)
  return {
    kind: 'network',
    networks: networks.map(n => checkFile('network', n)),
    nixpkgs,
    system,
    machines,
    label: networks.join(' ')
  }
}

/** deploy-plan and shard: a shard job deploys what an earlier job built and published. */
function readPlanSource(get: Get, text: string, problems: string[]): Source | undefined {
  for (const n of ['nixpkgs', 'system', 'machines', 'publish-to', 'diff-against'] as const)
    if (get(n) !== '') problems.push(`${n} is not used with deploy-plan (the plan's job evaluated and built)`)
  const { plan, problems: planProblems } = deployPlanProblems(text)
  problems.push(...planProblems)
  if (!plan) return undefined
  const shard = get('shard').trim()
  const machines = shardMachines(plan, shard)
  if (typeof machines === 'string') {
    problems.push(machines)
    return undefined
  }
  const of = `${machines.length} machines${plan.commit ? `, commit ${plan.commit.slice(0, 12)}` : ''}`
  return {
    kind: 'plan',
    plan,
    shard,
    label: shard ? `deploy-plan shard ${shard} (${of})` : `deploy-plan (${of})`
  }
}

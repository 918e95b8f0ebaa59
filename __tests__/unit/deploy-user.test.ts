import { spawnSync } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { GATE_PROTOCOL, gateCommand, scriptsHash } from '../../src/target/gate'
import { SCRIPT_OF } from '../../src/target/ssh-target'
import { partsOf } from '../../src/target/scripts'
import { publishUriProblem, STORE_SETTINGS } from '../../src/nix/store-uri'
import { formatPlanRecord } from '../../src/target/plan-record'

/**
 * The deploy user's gate and nda-root (nixos/deploy-user/*.sh) run for real by sh, their
 * @placeholders@ filled in as deploy-user.nix fills them, with stand-ins for what they hand over
 * to: `sudo` runs the command it is given, nda-root's scripts directory holds scripts that only
 * print their arguments (so a test sees exactly what would have run, and nothing else ran). The
 * e2e suite (deploy-user.test.ts) runs the real ones on the systemd Pi.
 */
const ROOT = path.join(__dirname, '..', '..')
const SRC = path.join(ROOT, 'nixos', 'deploy-user')
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-gate-test-'))
const scripts = path.join(tmp, 'scripts')
const marker = path.join(tmp, 'ran')
const LISTING = path.join(tmp, 'listing')
/** What the gate's `nix` says when it cannot list (when there is no LISTING); by default, no answer. */
const NIX_ERROR = path.join(tmp, 'nix-error')
const VALID = path.join(tmp, 'valid')

/** A script with common.sh in front of it, its placeholders filled in (as deploy-user.nix does). */
function fill(file: string, values: Record<string, string>): string {
  let text =
    fs.readFileSync(path.join(SRC, 'common.sh'), 'utf8') + fs.readFileSync(path.join(SRC, file), 'utf8')
  for (const [k, v] of Object.entries(values)) text = text.split(`@${k}@`).join(v)
  return text
}

beforeAll(() => {
  fs.mkdirSync(scripts)
  // Every script a verb may run: prints what it got (one line per argument) and its stdin.
  for (const name of fs.readdirSync(path.join(ROOT, 'src', 'target', 'scripts')))
    fs.writeFileSync(
      path.join(scripts, name),
      `echo "script ${name}" >>"${marker}"; for a in "$@"; do printf '${name}:arg:%s\\n' "$a"; done; [ -t 0 ] || sed 's/^/stdin:/'\n`
    )
  // The gate's `nix` (its listing of a deploy plan's closure from the cache): LISTING's lines, or
  // a failure (NIX_ERROR's words) when there is none.
  fs.mkdirSync(path.join(tmp, 'bin'))
  fs.writeFileSync(
    path.join(tmp, 'bin', 'nix'),
    `#!/bin/sh\necho "$*" >"${tmp}/nix-args"\necho "warning: a word from nix" >&2\n[ -f "${LISTING}" ] || { cat "${NIX_ERROR}" >&2 2>/dev/null || echo "error: unable to download" >&2; exit 1; }\ncat "${LISTING}"\n`,
    { mode: 0o755 }
  )
  // Its `nix-store`: the paths in VALID are valid; anything else asks the real one.
  const realNixStore = spawnSync('sh', ['-c', 'command -v nix-store'], { encoding: 'utf8' }).stdout.trim()
  fs.writeFileSync(
    path.join(tmp, 'bin', 'nix-store'),
    `#!/bin/sh\n[ "$1" = --check-validity ] && grep -qxF -- "$2" "${VALID}" 2>/dev/null && exit 0\nexec ${realNixStore || 'false'} "$@"\n`,
    { mode: 0o755 }
  )
  const common = {
    path: `${path.join(tmp, 'bin')}:${process.env.PATH ?? '/usr/bin:/bin'}`,
    scripts,
    protocol: String(GATE_PROTOCOL),
    scriptsHash: scriptsHash()
  }
  fs.writeFileSync(
    path.join(tmp, 'nda-root'),
    '#!/bin/sh\n' +
      fill('root.sh', { ...common, publicKey: 'nda-test-1:AAAA', keyDirs: '/run/keys /var/lib/keys' }),
    { mode: 0o755 }
  )
  fs.writeFileSync(path.join(tmp, 'sudo'), '#!/bin/sh\n[ "$1" = -n ] && shift\nexec "$@"\n', { mode: 0o755 })
  fs.writeFileSync(
    path.join(tmp, 'gate'),
    '#!/bin/sh\n' +
      fill('gate.sh', {
        ...common,
        root: path.join(tmp, 'nda-root'),
        sudo: path.join(tmp, 'sudo'),
        keyName: 'nda-test-1',
        tmpdir: tmp
      }),
    { mode: 0o755 }
  )
})

afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }))

beforeEach(() => fs.rmSync(marker, { force: true }))

/** The arguments the last script of a verb got (each script prints them, prefixed with its name). */
const argsOf = (stdout: string, script: string) =>
  stdout
    .split('\n')
    .filter(l => l.startsWith(`${script}:arg:`))
    .map(l => l.slice(`${script}:`.length))

/** The gate as sshd runs it: SSH_ORIGINAL_COMMAND is what the client asked for. */
function gate(command: string | undefined, stdin = '') {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH }
  if (command !== undefined) env.SSH_ORIGINAL_COMMAND = command
  const r = spawnSync('sh', [path.join(tmp, 'gate')], { env, input: stdin, encoding: 'utf8' })
  const ran = fs.existsSync(marker) ? fs.readFileSync(marker, 'utf8').trim().split('\n') : []
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, ran }
}

const storePath = (name: string) => `/nix/store/${'a'.repeat(32)}-${name}`
const GC = '/nix/var/nix/gcroots/nix-deploy-action/x.1'
const LOCK = '/nix/var/nix-deploy-action/lock'
/** A deploy plan's record as a shard job writes it (its message with a character past ASCII). */
const RECORD = formatPlanRecord({
  plan: '0123456789abcdef',
  shard: '2',
  state: 'failed',
  system: storePath('nixos-system-pi'),
  mode: 'switch',
  message: 'the health check failed … on pi3'
})

describe("the deploy user's gate (gate.sh)", () => {
  it('answers version with its protocol and the hash of the scripts it runs', () => {
    const r = gate('nix-deploy-action-gate version')
    expect(r.stdout.trim()).toBe(`nix-deploy-action-gate ${GATE_PROTOCOL} ${scriptsHash()}`)
  })

  it.each([
    ['a command', 'id'],
    ['a login shell', undefined],
    ['an empty command', ''],
    ['the sftp subsystem', '/usr/lib/openssh/sftp-server'],
    ['legacy scp', 'scp -t /root'],
    ['an unknown verb', 'nix-deploy-action-gate sh'],
    ['a value that is not _base64', 'nix-deploy-action-gate lock acquire'],
    ['shell in place of a value', 'nix-deploy-action-gate lock _YQ==;id'],
    ['no verb', 'nix-deploy-action-gate']
  ])('refuses %s (exit 64), running nothing', (_what, command) => {
    const r = gate(command)
    expect(r.status).toBe(64)
    expect(r.stderr).toMatch(/^nix-deploy-action-gate: refused: /)
    expect(r.ran).toEqual([])
  })

  it('passes each value to nda-root as one argument, never parsed as shell', () => {
    const hostile = `$(touch ${tmp}/pwned) \`id\` ; rm -rf / "' *`
    const r = gate(gateCommand('lock', ['acquire', LOCK, 'run-1', '600', hostile]))
    expect(r.status).toBe(0)
    expect(argsOf(r.stdout, 'lock-command.sh')).toEqual([
      'arg:acquire',
      `arg:${LOCK}`,
      'arg:run-1',
      'arg:600',
      `arg:${hostile}`
    ])
    expect(fs.existsSync(`${tmp}/pwned`)).toBe(false)
  })

  it('keeps empty values as values', () => {
    const r = gate(gateCommand('wrap-up', ['', '', '', '']))
    expect(r.status).toBe(0)
    expect(argsOf(r.stdout, 'wrap-up.sh')).toEqual(['arg:', 'arg:', 'arg:', 'arg:'])
  })

  it('refuses a value with a line break', () => {
    const command = `nix-deploy-action-gate lock _${Buffer.from('a\nb').toString('base64')}`
    expect(gate(command).status).toBe(64)
    expect(() => gateCommand('lock', ['a\nb'])).toThrow(/line break/)
  })

  it('takes store paths as Nix names them (capitals too), not derivations', () => {
    const caps = `/nix/store/${'0'.repeat(32)}-X-Restart-Triggers-sshd`
    expect(gate(gateCommand('query-missing'), `${caps}\n`).ran).toEqual(['script query-missing.sh'])
    expect(gate(gateCommand('substitute'), `${storePath('evil.drv')}\n`).status).toBe(64)
    // e, o, u and t are not in Nix's base32.
    expect(gate(gateCommand('query-missing'), `/nix/store/${'e'.repeat(32)}-x\n`).status).toBe(64)
  })

  /** The gate's substitute of one store path with these arguments, what ran counted afresh. */
  const substitute = (args: string[]) => {
    fs.rmSync(marker, { force: true })
    return gate(gateCommand('substitute', args), `${storePath('x')}\n`)
  }

  it("substitutes from a deploy plan's cache given as one value: HTTP(S) or S3 with publish-to's settings only", () => {
    const uri = 'https://cache.example.org/fleet?priority=10&want-mass-query=true'
    const r = gate(gateCommand('substitute', [uri]), `${storePath('x')}\n`)
    expect(r.status).toBe(0)
    expect(r.ran).toEqual(['script substitute.sh'])
    expect(argsOf(r.stdout, 'substitute.sh')).toEqual([`arg:${uri}`])
    expect(gate(gateCommand('substitute', ['s3://b?region=eu-west-1&endpoint=minio.lan:9000'])).status).toBe(
      0
    )
    for (const bad of [
      'file:///etc',
      'ssh://root@evil',
      'daemon',
      'local?root=/tmp/x',
      'http://cache?trusted=1',
      'http://cache?local-nar-cache=/var/lib/nix-deploy',
      'http://cache?priority=1&trusted=true',
      'http://a b',
      'http://',
      'https://cache/$(id)'
    ]) {
      const refused = substitute([bad])
      expect({ bad, status: refused.status, ran: refused.ran }).toEqual({ bad, status: 64, ran: [] })
    }
    const two = substitute([uri, 'nda-test-1:AAAA'])
    expect([two.status, two.ran]).toEqual([64, []])
  })

  it('takes an HTTP(S) or S3 cache exactly when publish-to takes it (publishUriProblem)', () => {
    for (const uri of [
      'http://[fd00::1]:5000/cache',
      'http://cache?&region=x',
      'https://cache/x?priority=10&want-mass-query=true',
      's3://bucket?region=eu-west-1&endpoint=minio.lan:9000',
      'http://cache/x%20y',
      'http://cache!x',
      "http://cache/it's",
      'http://cache(x)',
      'https://cache/$(id)',
      'http://cache?trusted=1',
      'http://cache?local-nar-cache=/x',
      'http://cache?secret-key=/k'
    ])
      expect({ uri, gate: substitute([uri]).status === 0 }).toEqual({
        uri,
        gate: publishUriProblem(uri) === undefined
      })
  })

  it('takes the same cache settings as publish-to (STORE_SETTINGS)', () => {
    const text = fs.readFileSync(path.join(SRC, 'gate.sh'), 'utf8')
    const block = /# STORE_SETTINGS[^\n]*\n([^)]*)\)/.exec(text)![1]
    const names = block
      .replace(/\\\n/g, ' ')
      .split(/[|\s]+/)
      .filter(Boolean)
    expect(names.sort()).toEqual([...STORE_SETTINGS].sort())
  })

  it('hands query-missing only store paths (an option on stdin is refused before anything runs)', () => {
    expect(gate(gateCommand('query-missing'), `${storePath('x')}\n--option\nplugin-files\n`).ran).toEqual([])
    const r = gate(gateCommand('query-missing'), `${storePath('x')}\n`)
    expect(r.ran).toEqual(['script query-missing.sh'])
    expect(r.stdout).toContain(`stdin:${storePath('x')}`)
  })
})

describe("the gate's survey by reference (a deploy plan's closure, listed from its cache as the deploy user)", () => {
  const uri = 'https://cache.example.org/fleet?priority=10'
  const args = [GC, storePath('s'), 'switch', 'no', '1440', LOCK, 'id-1', '600', 'a run']
  const stdinOf = (stdout: string) =>
    stdout
      .split('\n')
      .filter(l => l.startsWith('stdin:'))
      .map(l => l.slice('stdin:'.length))
  afterEach(() => {
    fs.rmSync(LISTING, { force: true })
    fs.rmSync(NIX_ERROR, { force: true })
    fs.rmSync(VALID, { force: true })
    fs.rmSync(path.join(tmp, 'nix-args'), { force: true })
    // Each call's directory is gone, whatever the call came to.
    expect(fs.readdirSync(tmp).filter(n => n.startsWith('nda-gate.'))).toEqual([])
  })

  it('lists it from the cache named, and hands nda-root the listing with "-" in the cache\'s place', () => {
    const listed = [storePath('s'), storePath('lib')]
    fs.writeFileSync(LISTING, listed.join('\n') + '\n')
    const r = gate(gateCommand('survey', [...args, uri]))
    expect(r.status).toBe(0)
    expect(r.ran).toEqual(['script lock.sh', 'script probe.sh', 'script survey.sh'])
    expect(argsOf(r.stdout, 'survey.sh')).toEqual([...args, '-'].map(a => `arg:${a}`))
    // nix's warning is not a path.
    expect(stdinOf(r.stdout).filter(Boolean)).toEqual(listed)
    expect(fs.readFileSync(path.join(tmp, 'nix-args'), 'utf8')).toContain(
      `path-info --recursive --store ${uri} `
    )
  })

  it('a cache it cannot list: nda-root gets none (it answers "closure unknown"), and nix\'s last word is said', () => {
    const http = "error: unable to download 'https://cache.example.org/x.narinfo': HTTP error 503"
    fs.writeFileSync(NIX_ERROR, `${http}\n`)
    const r = gate(gateCommand('survey', [...args, uri]))
    expect(r.status).toBe(0)
    expect(argsOf(r.stdout, 'survey.sh').at(-1)).toBe('arg:-')
    expect(stdinOf(r.stdout).filter(Boolean)).toEqual([])
    expect(r.stderr.trim()).toBe(http)
  })

  it('a cache that did not answer (below HTTP): "unanswered" in the listing\'s place, so the Pi is not asked to fetch from it', () => {
    const r = gate(gateCommand('survey', [...args, uri]))
    expect(r.status).toBe(0)
    expect(argsOf(r.stdout, 'survey.sh')).toEqual([...args, 'unanswered'].map(a => `arg:${a}`))
    expect(stdinOf(r.stdout).filter(Boolean)).toEqual([])
    expect(r.stderr.trim()).toBe('error: unable to download')
  })

  it('a listing with anything but store paths in it goes as none, never as a refusal', () => {
    fs.writeFileSync(LISTING, `${storePath('s')}\n${storePath('x.drv')}\n`)
    const r = gate(gateCommand('survey', [...args, uri]))
    expect(r.status).toBe(0)
    expect(stdinOf(r.stdout).filter(Boolean)).toEqual([])
    expect(r.stderr.trim()).toBe('the cache listed what is not a store path')
  })

  it('a system the store has: not listed from the cache (nda-root lists it from the store)', () => {
    fs.writeFileSync(VALID, `${storePath('s')}\n`)
    fs.writeFileSync(LISTING, `${storePath('s')}\n`)
    const r = gate(gateCommand('survey', [...args, uri]))
    expect(r.status).toBe(0)
    expect(fs.existsSync(path.join(tmp, 'nix-args'))).toBe(false)
    expect(stdinOf(r.stdout).filter(Boolean)).toEqual([])
  })

  it("nda-root's refusal comes back as its status (64), nothing run", () => {
    fs.writeFileSync(LISTING, `${storePath('s')}\n`)
    const r = gate(gateCommand('survey', ['/etc/x', ...args.slice(1), uri]))
    expect([r.status, r.ran]).toEqual([64, []])
    expect(r.stderr).toMatch(/nda-root: refused: /)
  })

  it('refuses a cache publish-to would not take, or paths on stdin beside it; nda-root refuses a cache at all', () => {
    for (const bad of ['file:///etc', 'http://cache?trusted=1', '-'])
      expect(gate(gateCommand('survey', [...args, bad])).status).toBe(64)
    expect(gate(gateCommand('survey', [...args, uri]), `${storePath('x')}\n`).status).toBe(64)
    // The deploy user calling nda-root itself, with a cache for root to fetch from.
    const direct = spawnSync(path.join(tmp, 'nda-root'), ['survey', ...args, uri], {
      input: '',
      encoding: 'utf8'
    })
    expect(direct.status).toBe(64)
    expect(fs.existsSync(marker)).toBe(false)
  })
})

/** nda-root, reached through the gate as the deploy user reaches it. */
function root(verb: Parameters<typeof gateCommand>[0], args: string[], stdin = '') {
  return gate(gateCommand(verb, args), stdin)
}

describe('nda-root (root.sh): every value checked again', () => {
  it.each<[string, Parameters<typeof gateCommand>[0], string[], string?]>(
    [
      ['a GC root elsewhere', 'survey', ['/etc/x', storePath('s'), 'switch', 'no', '1440', '', '', '', '']],
      [
        'a GC root that climbs',
        'survey',
        [
          '/nix/var/nix/gcroots/nix-deploy-action/../../x',
          storePath('s'),
          'switch',
          'no',
          '1',
          '',
          '',
          '',
          ''
        ]
      ],
      ['a toplevel outside the store', 'survey', [GC, '/tmp/s', 'switch', 'no', '1', '', '', '', '']],
      [
        'an option among the closure',
        'survey',
        [GC, storePath('s'), 'switch', 'no', '1', '', '', '', ''],
        '--option\nplugin-files\n/tmp/evil.so\n'
      ],
      ['another lock', 'lock', ['acquire', '/tmp/lock', 'id', '60', 'd']],
      ['a lock id with a slash', 'lock', ['acquire', LOCK, '../x', '60', 'd']],
      ['an activation directory elsewhere', 'prepare-agent', ['/tmp/agent']],
      [
        'another system profile',
        'start-agent',
        ['--dir', '/run/nix-deploy-action/a', '--system-profile', '/tmp/p']
      ],
      [
        'a system outside the store',
        'start-agent',
        ['--dir', '/run/nix-deploy-action/a', '--toplevel', '/tmp/sys']
      ],
      [
        'a system not in this store',
        'start-agent',
        ['--dir', '/run/nix-deploy-action/a', '--toplevel', storePath('nixos-system-x')]
      ],
      ['an option without a value', 'start-agent', ['--dir']],
      ['an unknown action', 'start-agent', ['--action', 'exec']],
      ['a generation that is not a number', 'delete-generations', ['1', '2;id']],
      ['a GC root to remove elsewhere', 'remove-gc-root', ['/etc/passwd']],
      ['a directory to remove elsewhere', 'remove-agent-dir', ['/run/nix-deploy-action/../../etc']],
      ['a key directory not listed', 'upload-key', ['/etc', 'passwd', 'root', 'root', '0644'], 'x'],
      ['a key name with a slash', 'upload-key', ['/run/keys', '../shadow', 'root', 'root', '0600'], 'x'],
      ['a key mode that is not octal', 'upload-key', ['/run/keys', 'k', 'root', 'root', 'u+s'], 'x'],
      ['an owner that is an option', 'upload-key', ['/run/keys', 'k', '-x', 'root', '0600'], 'x'],
      ['a health check the system does not list', 'health', ['id']],
      ['a reboot with other arguments', 'reboot', ['a', 'b']],
      ['a boot trial step it does not know', 'boot-trial', ['exec']],
      ['a follow that is not numbers', 'follow', ['/run/nix-deploy-action/a', 'x', '1', '1', '0']],
      ['a plan record without a lock', 'plan-record', ['', ''], RECORD],
      ['a plan record under another lock', 'plan-record', ['/tmp/lock', 'id-1'], RECORD],
      ['a plan record with a lock id that is not a name', 'plan-record', [LOCK, '../x'], RECORD],
      ['a plan record cut short (no end=1)', 'plan-record', [LOCK, 'id-1'], RECORD.replace('end=1\n', '')],
      [
        'a plan record line that is not key=value',
        'plan-record',
        [LOCK, 'id-1'],
        `current=/x\nsh -c id\n${RECORD}`
      ],
      ['a plan record with a control character', 'plan-record', [LOCK, 'id-1'], `message=a\rb\n${RECORD}`],
      ['a plan record over 8 KiB', 'plan-record', [LOCK, 'id-1'], `message=${'x'.repeat(9000)}\n${RECORD}`],
      ['a wrap-up with 5 values', 'wrap-up', ['', '', '', '', LOCK], RECORD],
      ['a decision with 3 values', 'decide', ['/run/nix-deploy-action/a', 'confirm', '0']],
      [
        'a decision whose look is not numbers',
        'decide',
        ['/run/nix-deploy-action/a', 'confirm', '0', '4096', '1;id']
      ],
      ["a wrap-up's plan record without a lock", 'wrap-up', ['', '', '', '', '', ''], RECORD],
      [
        "a wrap-up's plan record under another lock",
        'wrap-up',
        ['', '', LOCK, 'id-1', '/tmp/lock', 'id-1'],
        RECORD
      ],
      [
        "a wrap-up's plan record cut short (no end=1)",
        'wrap-up',
        ['', '', '', '', LOCK, 'id-1'],
        RECORD.replace('end=1\n', '')
      ],
      [
        "a wrap-up's plan record line that is not key=value",
        'wrap-up',
        ['', '', '', '', LOCK, 'id-1'],
        `current=/x\nsh -c id\n${RECORD}`
      ],
      [
        'a derivation among the closure',
        'survey',
        [GC, storePath('s'), 'switch', 'no', '1440', '', '', '', ''],
        `${storePath('x.drv')}\n`
      ],
      [
        "a GC root age that would remove other runs' roots",
        'survey',
        [GC, storePath('s'), 'switch', 'no', '0', '', '', '', '']
      ],
      ['a lock id that reads as an option', 'lock', ['acquire', LOCK, '--dir', '60', 'd']],
      ['a setuid key', 'upload-key', ['/run/keys', 'k', 'root', 'root', '4755'], 'x'],
      [
        'a rollback that deletes a generation with nothing to go back to',
        'start-agent',
        [
          '--dir',
          '/run/nix-deploy-action/a',
          '--action',
          'switch',
          '--rollback-of-generation',
          '1',
          '--rollback-created-new',
          '1'
        ]
      ]
    ].map(
      ([w, v, a, i]) => [w, v, a, i ?? ''] as [string, Parameters<typeof gateCommand>[0], string[], string]
    )
  )('refuses %s (exit 64) and runs nothing', (_what, verb, args, stdin) => {
    const r = root(verb, args, stdin)
    expect(r.status).toBe(64)
    expect(r.stderr).toMatch(/nda-root: refused: /)
    expect(r.ran).toEqual([])
  })

  it.each<[string, Parameters<typeof gateCommand>[0], string[], string[], string?]>(
    [
      [
        'survey',
        'survey',
        [GC, storePath('s'), 'switch', 'no', '1440', LOCK, 'id-1', '600', 'a run'],
        ['lock.sh', 'probe.sh', 'survey.sh'],
        `${storePath('s')}\n`
      ],
      ['lock', 'lock', ['renew', LOCK, 'id-1', '600', ''], ['lock.sh', 'lock-command.sh']],
      ['follow', 'follow', ['/run/nix-deploy-action/a', '0', '262144', '30', '1'], ['wake.sh', 'follow.sh']],
      ['decide', 'decide', ['/run/nix-deploy-action/a', 'confirm'], ['wake.sh', 'decide.sh', 'follow.sh']],
      [
        'decide with a look',
        'decide',
        ['/run/nix-deploy-action/a', 'confirm', '120', '262144', '20'],
        ['wake.sh', 'decide.sh', 'follow.sh']
      ],
      [
        'wrap-up',
        'wrap-up',
        ['/run/nix-deploy-action/a', GC, LOCK, 'id-1'],
        ['lock.sh', 'probe.sh', 'record.sh', 'wrap-up.sh']
      ],
      [
        'wrap-up with the plan record',
        'wrap-up',
        ['/run/nix-deploy-action/a', GC, '', '', LOCK, 'id-1'],
        ['lock.sh', 'probe.sh', 'record.sh', 'wrap-up.sh'],
        RECORD
      ],
      [
        'a key into a listed directory',
        'upload-key',
        ['/var/lib/keys', 'wifi-psk', 'root', 'keys', '0640'],
        ['upload-key.sh'],
        'secret'
      ],
      ['a plain reboot', 'reboot', [], ['lock.sh', 'reboot.sh']],
      ['a boot trial step', 'boot-trial', ['check-in'], ['boot-trial-steps.sh']],
      ['a plan record', 'plan-record', [LOCK, 'id-1'], ['lock.sh', 'record.sh', 'plan-record.sh'], RECORD],
      ['the state', 'probe', [], ['probe.sh', 'probe-command.sh']],
      ['the generations', 'list-generations', [], ['list-generations.sh']],
      ['abandon', 'abandon', ['/run/nix-deploy-action/a'], ['abandon.sh']],
      [
        'start-agent',
        'start-agent',
        [
          '--dir',
          '/run/nix-deploy-action/a',
          '--action',
          'switch',
          '--activation-timeout',
          '60',
          '--lock-dir',
          LOCK,
          '--lock-id',
          'x',
          '--lease',
          '600',
          '--rollback-of-generation',
          '-',
          '--rollback-created-new',
          '0'
        ],
        ['lock.sh', 'start-agent.sh']
      ]
    ].map(
      ([w, v, a, f, i]) =>
        [w, v, a, f, i ?? ''] as [string, Parameters<typeof gateCommand>[0], string[], string[], string]
    )
  )('runs its own scripts for %s, with the values as they were sent', (_what, verb, args, files, stdin) => {
    const r = root(verb, args, stdin)
    expect(r.status).toBe(0)
    expect(r.ran).toEqual(files.map(f => `script ${f}`))
    // The same script, part for part, that the action sends a login that takes commands.
    // (sent minified: the same files through mvdan/sh, scripts/embed-scripts.js.)
    // For start-agent, the action's writes the agent first (place-agent.sh): a gate has prepare-agent.
    const sent = partsOf(SCRIPT_OF[verb]!)!.filter(f => !(verb === 'start-agent' && f === 'place-agent.sh'))
    expect(sent).toEqual(files)
    if (verb === 'start-agent') expect(partsOf(SCRIPT_OF[verb]!)).toContain('place-agent.sh')
    expect(argsOf(r.stdout, files[files.length - 1])).toEqual(args.map(a => `arg:${a}`))
  })

  it.each<[string, string[]]>([
    ['plan-record', [LOCK, 'id-1']],
    ['wrap-up', ['/run/nix-deploy-action/a', GC, LOCK, 'id-1', LOCK, 'id-1']]
  ])('hands %s the record as sent, line for line', (verb, args) => {
    const r = root(verb as Parameters<typeof gateCommand>[0], args, RECORD)
    expect(r.status).toBe(0)
    const received = r.stdout
      .split('\n')
      .filter(l => l.startsWith('stdin:'))
      .map(l => l.slice('stdin:'.length))
    expect(received.join('\n') + '\n').toBe(RECORD)
  })

  it('hands a wrap-up without a record no input', () => {
    const r = root('wrap-up', ['/run/nix-deploy-action/a', GC, LOCK, 'id-1'], RECORD)
    expect(r.status).toBe(0)
    expect(r.stdout.split('\n').filter(l => l.startsWith('stdin:'))).toEqual([])
  })

  it('writes its own agent, not one the client sends', () => {
    // prepare-agent's stand-in prints its stdin: the agent nda-root composed from its own copies.
    const r = gate(gateCommand('prepare-agent', ['/run/nix-deploy-action/a']), 'echo the client agent')
    expect(r.ran).toEqual(['script prepare-agent.sh'])
    for (const f of ['lock.sh', 'wake.sh', 'agent.sh']) expect(r.stdout).toContain(`stdin:echo "script ${f}"`)
    expect(r.stdout).not.toContain('the client agent')
  })
})

const nixInstantiate = spawnSync('sh', ['-c', 'command -v nix-instantiate'], {
  encoding: 'utf8'
}).stdout.trim()
const describeNix = nixInstantiate || process.env.CI === 'true' ? describe : describe.skip

/**
 * deploy-user.nix evaluated by real Nix with a minimal lib and pkgs (no nixpkgs here): it parses,
 * its assertions hold for a sound configuration, its marker carries the hash the action computes,
 * and the scripts it writes have every placeholder filled in.
 */
describeNix('nixos/deploy-user.nix, evaluated', () => {
  function evaluate(cfg: string): Record<string, unknown> {
    const expr = `
      let
        lib = rec {
          mkEnableOption = d: { type = "bool"; };
          mkOption = o: o;
          types = { str = "str"; listOf = t: "list"; };
          mkIf = condition: content: { _type = "if"; inherit condition content; };
          hasSuffix = s: x: builtins.substring (builtins.stringLength x - builtins.stringLength s) (builtins.stringLength s) x == s;
          makeBinPath = ps: builtins.concatStringsSep ":" (map (p: "\${p}/bin") ps);
          fileContents = f: builtins.head (builtins.split "\\n" (builtins.readFile f));
          splitString = sep: s: builtins.filter builtins.isString (builtins.split sep s);
          concatMapStrings = f: l: builtins.concatStringsSep "" (map f l);
        };
        pkgs = { runtimeShell = "/bin/sh"; bash = "bash"; writeScript = name: text: text; }
          // builtins.listToAttrs (map (n: { name = n; value = "/pkgs/\${n}"; })
               [ "coreutils" "gnutar" "zstd" "xz" "gzip" "util-linux" "gnused" "gawk" "gnugrep" "findutils" "procps" "dash" ]);
        config = {
          nix = { package = "/pkgs/nix"; settings = { trusted-users = [ "root" ]; }; };
          systemd.package = "/pkgs/systemd";
          security.sudo.enable = true;
          services.nix-deploy-action.deployUser = ${cfg};
        };
        m = import ${path.join(ROOT, 'nixos', 'deploy-user.nix')} { inherit config lib pkgs; };
        c = m.config.content;
      in {
        assertions = map (a: a.assertion) c.assertions;
        marker = c.environment.etc."nix-deploy-action/deploy-user".text;
        checks = c.environment.etc."nix-deploy-action/health-checks".text;
        keys = c.users.users.nix-deploy.openssh.authorizedKeys.keys;
        sshd = c.services.openssh.extraConfig;
        trusted = c.nix.settings.trusted-public-keys;
      }`
    const r = spawnSync(
      nixInstantiate || 'nix-instantiate',
      ['--eval', '--strict', '--json', '--readonly-mode', '-E', expr],
      {
        encoding: 'utf8'
      }
    )
    if (r.status !== 0) throw new Error(r.stderr)
    return JSON.parse(r.stdout) as Record<string, unknown>
  }
  const sound = `{ enable = true; user = "nix-deploy"; authorizedKeys = [ "ssh-ed25519 AAAAC3 ci" ];
    signingPublicKey = "deploy-1:AAAA"; keyDirs = [ "/run/keys" ]; healthChecks = [ "systemctl is-active nginx" ]; }`

  it('marks the system with the protocol and the hash of the scripts the action carries', () => {
    const r = evaluate(sound)
    expect(r.assertions).toEqual([true, true, true, true])
    expect(r.marker).toBe(`protocol ${GATE_PROTOCOL} scripts ${scriptsHash()}\n`)
    expect(r.checks).toBe('systemctl is-active nginx\n')
    expect(r.trusted).toEqual(['deploy-1:AAAA'])
  })

  it('binds each key to the gate and forces it for the user, with every placeholder filled', () => {
    const r = evaluate(sound)
    const [key] = r.keys as string[]
    expect(key).toMatch(/^restrict,command=".*" ssh-ed25519 AAAAC3 ci$/s)
    expect(r.sshd).toMatch(/Match User nix-deploy\n\s+ForceCommand /)
    expect(r.sshd).toMatch(/DisableForwarding yes/)
    expect(`${key}${r.sshd as string}`).not.toMatch(/@[a-zA-Z]+@/)
  })

  it('fails its assertion when the deploy user is a trusted Nix user or the key is not NAME:KEY', () => {
    const r = evaluate(`${sound} // { signingPublicKey = "no-colon"; }`)
    expect(r.assertions).toEqual([true, true, true, false])
  })
})

import { ROLLBACK_MIN_SECONDS } from '../../src/deploy/activate'
import { execFileSync, spawn, spawnSync } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { AGENT_SCRIPT } from '../../src/target/scripts'

/**
 * The activation agent (src/target/scripts/agent.sh) run for real by sh, in a temporary directory:
 * its profile and /run/current-system are paths of the test's (--system-profile, --current-system),
 * `nix-env` is a stand-in that keeps generation links as Nix does (reusing the newest generation
 * when it already holds the path), and each system's switch-to-configuration records its calls and
 * fails when told to. The e2e suites run the same script on the simulated Pi with real Nix.
 */
const NIX_ENV = `#!/bin/sh
[ "$1" = -p ] || exit 2
P=$2; shift 2
base=$(basename "$P")
gens() { for l in "$P"-*-link; do [ -L "$l" ] && basename "$l" | sed -n "s/^$base-\\([0-9]*\\)-link$/\\1/p"; done | sort -n; }
case $1 in
  --set)
    [ -z "$NIXENV_FAIL_SET" ] || { echo "nix-env: disk full" >&2; exit 1; }
    last=$(gens | tail -n 1)
    if [ -n "$last" ] && [ "$(readlink "$P-$last-link")" = "$2" ]; then n=$last
    else n=$((\${last:-0} + 1)); ln -s "$2" "$P-$n-link"; fi
    ln -sfn "$base-$n-link" "$P" ;;
  --switch-generation)
    [ -L "$P-$2-link" ] || { echo "generation $2 does not exist" >&2; exit 1; }
    ln -sfn "$base-$2-link" "$P" ;;
  --delete-generations)
    shift
    for g in "$@"; do rm -f "$P-$g-link"; done ;;
esac
`

interface World {
  root: string
  profile: string
  current: string
  sys: (name: string) => string
  calls: () => string[]
  gens: () => string[]
  profileLink: () => string
  /** The system the boot loader boots (what the last switch or boot installed), or ''. */
  bootDefault: () => string
  /** Runs the agent to its end (in DIR when given: one the test prepared). */
  run: (
    opts: Record<string, string>,
    env?: Record<string, string>,
    dir?: string
  ) => { outcome: string; log: string }
}

function world(
  systems: string[],
  failing: string[] = [],
  slow: Record<string, number> = {},
  failingBoot: string[] = []
): World {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-agent-'))
  const bin = path.join(root, 'bin')
  fs.mkdirSync(bin)
  fs.writeFileSync(path.join(bin, 'nix-env'), NIX_ENV, { mode: 0o755 })
  fs.mkdirSync(path.join(root, 'profiles'))
  const profile = path.join(root, 'profiles', 'system')
  const current = path.join(root, 'current-system')
  const callsFile = path.join(root, 'calls')
  const bootFile = path.join(root, 'boot-default')
  for (const name of systems) {
    const dir = path.join(root, name)
    fs.mkdirSync(path.join(dir, 'bin'), { recursive: true })
    const fail = failing.includes(name) ? `echo "${name}: fails on purpose" >&2; exit 1` : ''
    // Its boot loader install fails as on a full /boot: the boot default stays what it was.
    const failBoot = failingBoot.includes(name)
      ? `case $1 in switch|boot) echo "${name}: /boot is full" >&2; exit 1 ;; esac`
      : ''
    fs.writeFileSync(
      path.join(dir, 'bin', 'switch-to-configuration'),
      `#!/bin/sh\necho "${name} $1" >>${callsFile}\n${slow[name] ? `sleep ${slow[name]}` : ''}\n${fail}\n${failBoot}\ncase $1 in switch|boot) echo ${dir} >${bootFile} ;; esac\ncase $1 in switch|test) ln -sfn ${dir} ${current} ;; esac\n`,
      { mode: 0o755 }
    )
  }
  const w: World = {
    root,
    profile,
    current,
    sys: name => path.join(root, name),
    calls: () => (fs.existsSync(callsFile) ? fs.readFileSync(callsFile, 'utf8').trim().split('\n') : []),
    gens: () =>
      fs
        .readdirSync(path.join(root, 'profiles'))
        .filter(n => /^system-\d+-link$/.test(n))
        .sort(),
    profileLink: () => fs.readlinkSync(profile),
    bootDefault: () => (fs.existsSync(bootFile) ? fs.readFileSync(bootFile, 'utf8').trim() : ''),
    run: (opts, env = {}, dir = path.join(root, `run-${Math.random().toString(16).slice(2)}`)) => {
      fs.mkdirSync(dir, { recursive: true })
      fs.writeFileSync(path.join(dir, 'log'), '')
      const args = Object.entries({
        '--dir': dir,
        '--activation-timeout': '30',
        '--system-profile': profile,
        '--current-system': current,
        ...opts
      }).flat()
      const r = spawnSync('sh', ['-c', AGENT_SCRIPT, 'sh', ...args], {
        encoding: 'utf8',
        env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, ...env },
        timeout: 60_000
      })
      if (r.status !== 0) throw new Error(`agent exited ${r.status}: ${r.stderr}`)
      const read = (f: string): string =>
        fs.existsSync(path.join(dir, f)) ? fs.readFileSync(path.join(dir, f), 'utf8').trim() : ''
      return { outcome: read('outcome'), log: read('log') }
    }
  }
  return w
}

/** A target running `name` from generation 1 (its profile and boot entry). */
function installed(w: World, name: string): void {
  spawnSync(path.join(w.root, 'bin', 'nix-env'), ['-p', w.profile, '--set', w.sys(name)])
  fs.symlinkSync(w.sys(name), w.current)
  fs.writeFileSync(path.join(w.root, 'boot-default'), `${w.sys(name)}\n`)
}

/** An agent directory whose decision is already there when the agent starts waiting (as decide.sh writes it). */
function decided(w: World, decision: string): string {
  const dir = path.join(w.root, 'decided-run')
  fs.mkdirSync(path.join(dir, 'decided'), { recursive: true })
  fs.writeFileSync(path.join(dir, 'decision'), decision)
  return dir
}

const deploy = (w: World, top: string, action = 'switch', extra: Record<string, string> = {}) => ({
  '--toplevel': w.sys(top),
  '--action': action,
  '--prev-current': fs.realpathSync(w.current),
  '--prev-profile': fs.realpathSync(w.profile),
  '--prev-generation': w.profileLink().replace(/^system-(\d+)-link$/, '$1'),
  ...extra
})

describe('the activation agent (real script, stub nix-env and systems)', () => {
  it('switch: sets the profile (a new generation), activates, done', () => {
    const w = world(['old', 'new'])
    installed(w, 'old')
    const r = w.run(deploy(w, 'new'))
    expect(r.outcome).toBe('done')
    expect(w.gens()).toEqual(['system-1-link', 'system-2-link'])
    expect(fs.realpathSync(w.profile)).toBe(w.sys('new'))
    expect(w.calls()).toEqual(['new switch'])
  })

  it('a failed switch rolls back exactly: the profile link as it was, the new generation deleted, the old system re-activated', () => {
    const w = world(['old', 'new'], ['new'])
    installed(w, 'old')
    const r = w.run(deploy(w, 'new'))
    expect(r.outcome).toBe('rolled-back')
    expect(w.gens()).toEqual(['system-1-link'])
    expect(w.profileLink()).toBe('system-1-link')
    expect(fs.realpathSync(w.current)).toBe(w.sys('old'))
    expect(w.calls()).toEqual(['new switch', 'old test', 'old boot'])
  })

  it('after an agent killed half-way: --rollback-of-generation puts back what it did, and only that', () => {
    const w = world(['old', 'new'])
    installed(w, 'old')
    const prev = deploy(w, 'new')
    // What the killed agent had done: generation 2 set, the new system running, no outcome.
    spawnSync(path.join(w.root, 'bin', 'nix-env'), ['-p', w.profile, '--set', w.sys('new')])
    fs.unlinkSync(w.current)
    fs.symlinkSync(w.sys('new'), w.current)
    const r = w.run({ ...prev, '--rollback-of-generation': '2', '--rollback-created-new': '1' })
    expect(r.outcome).toBe('rolled-back')
    expect(w.gens()).toEqual(['system-1-link'])
    expect(w.profileLink()).toBe('system-1-link')
    expect(fs.realpathSync(w.current)).toBe(w.sys('old'))
    // It re-activated the old system; it never ran the new one's switch-to-configuration.
    expect(w.calls()).toEqual(['old test', 'old boot'])
  })

  it('after an agent killed before it made a generation (-): the old system re-activated, no generation deleted', () => {
    const w = world(['old', 'new'])
    installed(w, 'old')
    const r = w.run({ ...deploy(w, 'new'), '--rollback-of-generation': '-', '--rollback-created-new': '0' })
    expect(r.outcome).toBe('rolled-back')
    expect(w.gens()).toEqual(['system-1-link'])
    expect(w.calls()).toEqual(['old test', 'old boot'])
  })

  it('keeps a generation it did not create (nix-env --set reused the newest one)', () => {
    const w = world(['old', 'new'], ['new'])
    installed(w, 'old')
    spawnSync(path.join(w.root, 'bin', 'nix-env'), ['-p', w.profile, '--set', w.sys('new')])
    spawnSync(path.join(w.root, 'bin', 'nix-env'), ['-p', w.profile, '--switch-generation', '1'])
    const r = w.run(deploy(w, 'new'))
    expect(r.outcome).toBe('rolled-back')
    expect(w.gens()).toEqual(['system-1-link', 'system-2-link'])
    expect(w.profileLink()).toBe('system-1-link')
  })

  it('when the previous generation is gone, sets the profile to its store path instead', () => {
    const w = world(['old', 'new'], ['new'])
    installed(w, 'old')
    const r = w.run(deploy(w, 'new', 'switch', { '--prev-generation': '9' }))
    expect(r.outcome).toBe('rolled-back')
    expect(r.log).toContain('generation 9 is gone: setting the profile to')
    expect(fs.realpathSync(w.profile)).toBe(w.sys('old'))
  })

  it('after a test deploy, a failed test deploy re-activates what ran (as test), leaving the profile alone', () => {
    const w = world(['old', 'mid', 'new'], ['new'])
    installed(w, 'old')
    fs.unlinkSync(w.current)
    fs.symlinkSync(w.sys('mid'), w.current)
    const r = w.run(deploy(w, 'new', 'test'))
    expect(r.outcome).toBe('rolled-back')
    expect(w.calls()).toEqual(['new test', 'mid test'])
    expect(fs.realpathSync(w.current)).toBe(w.sys('mid'))
    expect(fs.realpathSync(w.profile)).toBe(w.sys('old'))
  })

  it('boot: a failed boot restores the previous boot entry, and runs nothing', () => {
    const w = world(['old', 'new'], ['new'])
    installed(w, 'old')
    const r = w.run(deploy(w, 'new', 'boot'))
    expect(r.outcome).toBe('rolled-back')
    expect(w.calls()).toEqual(['new boot', 'old boot'])
    expect(w.profileLink()).toBe('system-1-link')
  })

  it('profile-failed: nix-env cannot set the profile, nothing is activated', () => {
    const w = world(['old', 'new'])
    installed(w, 'old')
    const r = w.run(deploy(w, 'new'), { NIXENV_FAIL_SET: '1' })
    expect(r.outcome).toBe('profile-failed')
    expect(w.calls()).toEqual([])
  })

  it('an activation past activation-timeout is rolled back even when the old system takes longer than that to switch back', () => {
    const w = world(['old', 'new'], [], { new: 30, old: 3 })
    installed(w, 'old')
    const r = w.run({ ...deploy(w, 'new'), '--activation-timeout': '1' })
    expect(r.log).toMatch(/activation did not finish within 1 s/)
    expect(r.outcome).toBe('rolled-back')
    expect(fs.realpathSync(w.current)).toBe(w.sys('old'))
  })
  it("its rollback floor is the runner's (ROLLBACK_MIN_SECONDS)", () => {
    expect(AGENT_SCRIPT).toContain(`ROLLBACK_MIN_SECONDS=${ROLLBACK_MIN_SECONDS}\n`)
  })
  it('rollback-failed: the old system fails to re-activate too', () => {
    const w = world(['old', 'new'], ['new', 'old'])
    installed(w, 'old')
    expect(w.run(deploy(w, 'new')).outcome).toBe('rollback-failed')
  })

  it('dry-activate that fails is "failed", and nothing is rolled back', () => {
    const w = world(['old', 'new'], ['new'])
    installed(w, 'old')
    expect(w.run(deploy(w, 'new', 'dry-activate')).outcome).toBe('failed')
    expect(w.calls()).toEqual(['new dry-activate'])
  })

  // A switch that waits activates as "test"; the profile and the boot entry follow the confirmation.
  it.each([
    ['confirm', 'confirmed', ['new test', 'new boot'], 'new', ['system-1-link', 'system-2-link']],
    ['abort', 'rolled-back', ['new test', 'old test'], 'old', ['system-1-link']]
  ])('waiting for the decision: %s gives %s', (decision, outcome, calls, runs, gens) => {
    const w = world(['old', 'new'])
    installed(w, 'old')
    expect(
      w.run(deploy(w, 'new', 'switch', { '--wait-seconds': '30' }), {}, decided(w, decision)).outcome
    ).toBe(outcome)
    expect(w.calls()).toEqual(calls)
    expect(fs.realpathSync(w.current)).toBe(w.sys(runs))
    expect(fs.realpathSync(w.profile)).toBe(w.sys(runs))
    expect(w.bootDefault()).toBe(w.sys(runs))
    expect(w.gens()).toEqual(gens)
  })

  it('until the decision, the profile and the boot default stay the old system (a power cut then boots it): the new one runs', async () => {
    const w = world(['old', 'new'])
    installed(w, 'old')
    const dir = path.join(w.root, 'window')
    fs.mkdirSync(dir)
    fs.writeFileSync(path.join(dir, 'log'), '')
    const args = Object.entries({
      '--dir': dir,
      '--activation-timeout': '30',
      '--system-profile': w.profile,
      '--current-system': w.current,
      ...deploy(w, 'new', 'switch', { '--wait-seconds': '60' })
    }).flat()
    const agent = spawn('sh', ['-c', AGENT_SCRIPT, 'sh', ...args], {
      env: { ...process.env, PATH: `${path.join(w.root, 'bin')}:${process.env.PATH}` },
      stdio: 'ignore'
    })
    const ended = new Promise<number | null>(res => agent.on('exit', code => res(code)))
    try {
      // The activation's status: the agent now waits for the decision.
      for (let i = 0; i < 300 && !fs.existsSync(path.join(dir, 'status')); i++)
        await new Promise(r => setTimeout(r, 100))
      expect(fs.readFileSync(path.join(dir, 'status'), 'utf8').trim()).toBe('0')
      expect(fs.realpathSync(w.current)).toBe(w.sys('new'))
      expect(fs.realpathSync(w.profile)).toBe(w.sys('old'))
      expect(w.bootDefault()).toBe(w.sys('old'))
      expect(w.gens()).toEqual(['system-1-link'])
      expect(fs.existsSync(path.join(dir, 'generation'))).toBe(false)
      // Confirmed as decide.sh does it: then the new system becomes the profile and the boot default.
      fs.mkdirSync(path.join(dir, 'decided'))
      fs.writeFileSync(path.join(dir, 'decision'), 'confirm')
      expect(await ended).toBe(0)
      expect(fs.readFileSync(path.join(dir, 'outcome'), 'utf8').trim()).toBe('confirmed')
      expect(fs.readFileSync(path.join(dir, 'generation'), 'utf8').trim()).toBe('2')
      expect(fs.realpathSync(w.profile)).toBe(w.sys('new'))
      expect(w.bootDefault()).toBe(w.sys('new'))
    } finally {
      agent.kill('SIGKILL')
    }
  }, 60_000)

  it('confirmed, but its boot entry cannot be installed (/boot full): rolled back, so that what runs is what boots', () => {
    const w = world(['old', 'new'], [], {}, ['new'])
    installed(w, 'old')
    const r = w.run(deploy(w, 'new', 'switch', { '--wait-seconds': '30' }), {}, decided(w, 'confirm'))
    expect(r.outcome).toBe('boot-entry-failed')
    expect(w.calls()).toEqual(['new test', 'new boot', 'old test', 'old boot'])
    expect(fs.realpathSync(w.current)).toBe(w.sys('old'))
    expect(w.profileLink()).toBe('system-1-link')
    expect(w.gens()).toEqual(['system-1-link'])
    expect(w.bootDefault()).toBe(w.sys('old'))
  })

  it('a /boot too full for either boot entry: the old system runs again all the same (test, not switch), and the failure is said', () => {
    const w = world(['old', 'new'], [], {}, ['new', 'old'])
    installed(w, 'old')
    const r = w.run(deploy(w, 'new', 'switch', { '--wait-seconds': '30' }), {}, decided(w, 'confirm'))
    expect(r.outcome).toBe('rollback-failed')
    expect(fs.realpathSync(w.current)).toBe(w.sys('old'))
    expect(w.profileLink()).toBe('system-1-link')
    expect(w.bootDefault()).toBe(w.sys('old'))
  })

  it('a confirmed switch killed once it set the profile, before the action read its generation: the rollback-only agent (-) sets the profile back', () => {
    const w = world(['old', 'new'])
    installed(w, 'old')
    const prev = deploy(w, 'new', 'switch', { '--wait-seconds': '30' })
    // What the killed agent had done: the new system running (test), then the profile set.
    spawnSync(path.join(w.root, 'bin', 'nix-env'), ['-p', w.profile, '--set', w.sys('new')])
    fs.unlinkSync(w.current)
    fs.symlinkSync(w.sys('new'), w.current)
    const r = w.run({
      ...prev,
      '--wait-seconds': '0',
      '--rollback-of-generation': '-',
      '--rollback-created-new': '0'
    })
    expect(r.outcome).toBe('rolled-back')
    expect(w.profileLink()).toBe('system-1-link')
    expect(fs.realpathSync(w.current)).toBe(w.sys('old'))
    expect(w.bootDefault()).toBe(w.sys('old'))
    // Its generation stays (the action never learnt it was this deploy's).
    expect(w.gens()).toEqual(['system-1-link', 'system-2-link'])
  })

  it('a first deploy (no profile before) that fails: its profile removed, but its boot entry cannot be put back, which it says', () => {
    const w = world(['new'], ['new'])
    const r = w.run({ '--toplevel': w.sys('new'), '--action': 'switch' })
    expect(r.outcome).toBe('rollback-failed')
    expect(r.log).toContain('the boot entry it may have installed cannot be put back')
    expect(w.gens()).toEqual([])
    expect(fs.existsSync(w.profile)).toBe(false)
  })

  it('a first test deploy (nothing running before) that fails is rolled back, not "rollback-failed"', () => {
    const w = world(['new'], ['new'])
    const r = w.run({ '--toplevel': w.sys('new'), '--action': 'test' })
    expect(r.outcome).toBe('rolled-back')
    expect(w.calls()).toEqual(['new test'])
  })

  it('a switch that does not wait sets the profile and the boot entry first, as nixos-rebuild does', () => {
    const w = world(['old', 'new'])
    installed(w, 'old')
    expect(w.run(deploy(w, 'new')).outcome).toBe('done')
    expect(w.calls()).toEqual(['new switch'])
    expect(w.bootDefault()).toBe(w.sys('new'))
  })

  it.each([
    ['rollback', 'rolled-back-unconfirmed', 'old', ['new test', 'old test']],
    ['keep', 'unconfirmed-kept', 'new', ['new test', 'new boot']]
  ])(
    'no decision in time, on-timeout %s: %s',
    (onTimeout, outcome, runs, calls) => {
      const w = world(['old', 'new'])
      installed(w, 'old')
      const r = w.run(deploy(w, 'new', 'switch', { '--wait-seconds': '1', '--on-timeout': onTimeout }))
      expect(r.outcome).toBe(outcome)
      expect(fs.realpathSync(w.current)).toBe(w.sys(runs))
      expect(fs.realpathSync(w.profile)).toBe(w.sys(runs))
      expect(w.bootDefault()).toBe(w.sys(runs))
      expect(w.calls()).toEqual(calls)
    },
    30_000
  )

  it("rolls back with the running system's nix-env, not what the new system puts first on PATH (none: nix.enable = false)", () => {
    const w = world(['old', 'new'])
    installed(w, 'old')
    // PATH reaches the tools through the running system (/run/current-system/sw/bin): the new
    // system's switch points that at tools without nix-env, then fails.
    const tools = (name: string, withNix: boolean): string => {
      const d = path.join(w.root, `tools-${name}`)
      fs.mkdirSync(d)
      if (withNix) {
        // As Nix installs it: `nix`, which acts as nix-env only when called by that name, and a
        // link nix-env to it.
        const nix = fs.readFileSync(path.join(w.root, 'bin', 'nix-env'), 'utf8')
        const multi = nix.replace(
          '#!/bin/sh\n',
          '#!/bin/sh\n[ "${0##*/}" = nix-env ] || { echo "nix: not nix-env" >&2; exit 1; }\n'
        )
        fs.writeFileSync(path.join(d, 'nix'), multi, { mode: 0o755 })
        fs.symlinkSync('nix', path.join(d, 'nix-env'))
      }
      return d
    }
    const sw = path.join(w.root, 'sw-bin')
    fs.symlinkSync(tools('old', true), sw)
    // (As the first on PATH, what stands for "none": the host's own nix-env comes later on PATH.)
    const newTools = tools('new', false)
    fs.writeFileSync(path.join(newTools, 'nix-env'), '#!/bin/sh\necho "not this system\'s" >&2\nexit 127\n', {
      mode: 0o755
    })
    fs.writeFileSync(
      path.join(w.sys('new'), 'bin', 'switch-to-configuration'),
      `#!/bin/sh
ln -sfn ${newTools} ${sw}
ln -sfn ${w.sys('new')} ${w.current}
exit 1
`
    )
    fs.rmSync(path.join(w.root, 'bin', 'nix-env'))
    const r = w.run(deploy(w, 'new'), { PATH: `${sw}:${process.env.PATH}` })
    expect(r.outcome).toBe('rolled-back')
    expect(fs.realpathSync(w.profile)).toBe(w.sys('old'))
    expect(w.gens()).toEqual(['system-1-link'])
  })

  // A tmpfs of its own (mount: root; CI runs as root, so there it never skips).
  const asRoot = process.getuid?.() === 0
  if (!asRoot && process.env.CI === 'true') throw new Error('the agent tests need root in CI (a tmpfs mount)')
  ;(asRoot ? it : it.skip)(
    "a new system that fills /run (the agent's directory): the agent still learns the activation's end, its timeout still rolls back",
    () => {
      const w = world(['old', 'new'])
      installed(w, 'old')
      const run = path.join(w.root, 'run')
      fs.mkdirSync(run)
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', run])
      try {
        const fill = path.join(run, 'filled-by-the-new-system')
        // The new system fills it (and activates fine); switching back to the old one frees it.
        fs.writeFileSync(
          path.join(w.sys('new'), 'bin', 'switch-to-configuration'),
          `#!/bin/sh
cat /dev/zero >"${fill}" 2>/dev/null
ln -sfn ${w.sys('new')} ${w.current}
exit 0
`
        )
        fs.writeFileSync(
          path.join(w.sys('old'), 'bin', 'switch-to-configuration'),
          `#!/bin/sh
rm -f "${fill}"
ln -sfn ${w.sys('old')} ${w.current}
`
        )
        // It ends by itself (before: it waited for the status it could not write, for ever, and
        // run() failed when its time limit killed it).
        const r = w.run(
          deploy(w, 'new', 'switch', { '--wait-seconds': '2', '--on-timeout': 'rollback' }),
          {},
          path.join(run, 'agent')
        )
        expect(r.outcome).toBe('rolled-back-unconfirmed')
        expect(fs.realpathSync(w.current)).toBe(w.sys('old'))
      } finally {
        execFileSync('umount', [run])
      }
    },
    90_000
  )

  it('refuses an unknown option or a missing required one', () => {
    const r = spawnSync('sh', ['-c', AGENT_SCRIPT, 'sh', '--dir', '/tmp', '--bogus', 'x'], {
      encoding: 'utf8'
    })
    expect(r.status).toBe(2)
    expect(r.stderr).toContain('unknown option --bogus')
    const m = spawnSync('sh', ['-c', AGENT_SCRIPT, 'sh', '--dir', '/tmp'], { encoding: 'utf8' })
    expect(m.status).toBe(2)
    expect(m.stderr).toContain('required')
  })
})

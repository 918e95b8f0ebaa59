import { spawn, spawnSync } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'

/**
 * The target's boot trial (nixos/boot-trial.sh, which the NixOS module runs at boot) run for real by
 * sh in a temporary directory: its state directory, profile, /run/booted-system and store are the
 * test's (NDA_* variables); `nix-env` and `systemctl` are stand-ins that record what they were
 * asked. The e2e suite runs the same script at boot on the systemd Pi, with real Nix and systemd.
 */
const SCRIPT = path.join(__dirname, '..', '..', 'nixos', 'boot-trial.sh')

const NIX_ENV = `#!/bin/sh
echo "nix-env $*" >>"$CALLS"
[ "$1" = -p ] || exit 2
P=$2
case $3 in
  --switch-generation) ln -sfn "$(basename "$P")-$4-link" "$P" ;;
  --set) n=$(ls "$(dirname "$P")" | grep -c -- '-link$'); n=$((n + 1)); ln -s "$4" "$P-$n-link"; ln -sfn "$(basename "$P")-$n-link" "$P" ;;
esac
`

interface World {
  root: string
  state: string
  sys: (name: string) => string
  calls: () => string[]
  profileTarget: () => string
  writeTrial: (fields: Record<string, string>) => void
  env: Record<string, string>
}

function world(opts: { booted: string; failing?: string[] }): World {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-trial-'))
  const store = path.join(root, 'store')
  const bin = path.join(root, 'bin')
  const state = path.join(root, 'state')
  const profiles = path.join(root, 'profiles')
  const calls = path.join(root, 'calls')
  for (const d of [store, bin, state, profiles]) fs.mkdirSync(d)
  fs.writeFileSync(path.join(bin, 'nix-env'), NIX_ENV, { mode: 0o755 })
  fs.writeFileSync(path.join(bin, 'systemctl'), `#!/bin/sh\necho "systemctl $*" >>"$CALLS"\n`, {
    mode: 0o755
  })
  const sys = (name: string): string => path.join(store, `${'a'.repeat(32)}-${name}`)
  for (const name of ['old', 'new', 'other']) {
    fs.mkdirSync(path.join(sys(name), 'bin'), { recursive: true })
    const fail = opts.failing?.includes(name) ? 'exit 1' : ''
    fs.writeFileSync(
      path.join(sys(name), 'bin', 'switch-to-configuration'),
      `#!/bin/sh\necho "${name} $1" >>"$CALLS"\n${fail}\n`,
      { mode: 0o755 }
    )
  }
  // The profile as the deploy left it: generation 1 the old system, 2 the new one (the default).
  fs.symlinkSync(sys('old'), path.join(profiles, 'system-1-link'))
  fs.symlinkSync(sys('new'), path.join(profiles, 'system-2-link'))
  fs.symlinkSync('system-2-link', path.join(profiles, 'system'))
  fs.symlinkSync(sys(opts.booted), path.join(root, 'booted-system'))
  fs.writeFileSync(path.join(root, 'boot_id'), 'this-boot\n')
  return {
    root,
    state,
    sys,
    calls: () => (fs.existsSync(calls) ? fs.readFileSync(calls, 'utf8').trim().split('\n') : []),
    profileTarget: () => fs.realpathSync(path.join(profiles, 'system')),
    writeTrial: fields =>
      fs.writeFileSync(
        path.join(state, 'boot-trial'),
        Object.entries(fields)
          .map(([k, v]) => `${k}=${v}\n`)
          .join('')
      ),
    env: {
      NDA_BOOT_ID_FILE: path.join(root, 'boot_id'),
      PATH: `${bin}:/usr/bin:/bin`,
      CALLS: calls,
      NDA_STATE_DIR: state,
      NDA_SYSTEM_PROFILE: path.join(profiles, 'system'),
      NDA_BOOTED_SYSTEM: path.join(root, 'booted-system'),
      NDA_STORE_DIR: store
    }
  }
}

const runTrial = (w: World): { status: number | null; out: string } => {
  const r = spawnSync('sh', [SCRIPT], { env: w.env, encoding: 'utf8', timeout: 30_000 })
  return { status: r.status, out: r.stdout + r.stderr }
}
const exists = (w: World, name: string): boolean => fs.existsSync(path.join(w.state, name))
/** The pending record's identity as the trial keeps it in boot-trial.boots: its inode and mtime. */
const recordId = (w: World): string => {
  const f = ['boot-trial', 'boot-trial.reached'].map(n => path.join(w.state, n)).find(p => fs.existsSync(p))!
  const st = fs.statSync(f)
  return `${st.ino}.${Math.floor(st.mtimeMs / 1000)}`
}
/** It went back: the previous generation, its boot entry, a reboot; the record expired; why. */
const expectWentBack = (w: World, why: RegExp): void => {
  expect(w.calls()).toEqual([
    `nix-env -p ${w.env.NDA_SYSTEM_PROFILE} --switch-generation 1`,
    'old boot',
    'systemctl reboot'
  ])
  expect(w.profileTarget()).toBe(w.sys('old'))
  expect(exists(w, 'boot-trial')).toBe(false)
  expect(exists(w, 'boot-trial.expired')).toBe(true)
  expect(fs.readFileSync(path.join(w.state, 'boot-trial.rolled-back'), 'utf8')).toMatch(why)
}
const trialOf = (w: World, secs: string, gen = '1') => ({
  new: w.sys('new'),
  previous: w.sys('old'),
  'previous-generation': gen,
  'confirm-seconds': secs
})

describe('the boot trial on the target (nixos/boot-trial.sh)', () => {
  it('no trial pending: nothing happens', () => {
    const w = world({ booted: 'new' })
    expect(runTrial(w)).toMatchObject({ status: 0, out: expect.stringMatching(/no trial pending/) })
    expect(w.calls()).toEqual([])
  })

  it('unconfirmed within its time: the previous generation, its boot entry, a reboot', () => {
    const w = world({ booted: 'new' })
    w.writeTrial(trialOf(w, '1'))
    const r = runTrial(w)
    expect(r.status).toBe(0)
    expectWentBack(w, /not confirmed within 1 s/)
  })

  it('confirmed while it waits (the deploy renames the record): nothing is undone', async () => {
    const w = world({ booted: 'new' })
    w.writeTrial(trialOf(w, '60'))
    const child = spawn('sh', [SCRIPT], { env: w.env })
    let out = ''
    const exit = new Promise<number | null>(resolve => child.on('exit', code => resolve(code)))
    // Confirm once it says it waits (the action's confirm is this same rename).
    await new Promise<void>(resolve =>
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString()
        if (/waiting up to 60 s/.test(out)) resolve()
      })
    )
    fs.renameSync(path.join(w.state, 'boot-trial'), path.join(w.state, 'boot-trial.confirmed'))
    expect(await exit).toBe(0)
    expect(out).toMatch(/confirmed/)
    expect(w.calls()).toEqual([])
    expect(w.profileTarget()).toBe(w.sys('new'))
  })

  it('rejected by the deploy (its checks failed): goes back at once, not after its time', () => {
    const w = world({ booted: 'new' })
    w.writeTrial(trialOf(w, '3600'))
    fs.writeFileSync(path.join(w.state, 'boot-trial.reject'), '')
    const r = runTrial(w)
    expect(r.status).toBe(0)
    expect(r.out).toMatch(/the deploy rejected it/)
    expect(w.calls()).toContain('systemctl reboot')
    expect(w.profileTarget()).toBe(w.sys('old'))
    expect(exists(w, 'boot-trial.reject')).toBe(false)
  })

  it('the previous generation is gone (or holds another system): the previous system set as a new one', () => {
    const w = world({ booted: 'new' })
    w.writeTrial(trialOf(w, '0', '7'))
    runTrial(w)
    expect(w.calls()[0]).toBe(`nix-env -p ${w.env.NDA_SYSTEM_PROFILE} --set ${w.sys('old')}`)
    expect(w.profileTarget()).toBe(w.sys('old'))
  })

  it('a record for another system than the one booted is over: kept as .stale, nothing done', () => {
    const w = world({ booted: 'other' })
    w.writeTrial(trialOf(w, '0'))
    expect(runTrial(w).status).toBe(0)
    expect(w.calls()).toEqual([])
    expect(exists(w, 'boot-trial.stale')).toBe(true)
  })

  it('a record it cannot trust (a shell word, a path inside a store path) is set aside, never run', () => {
    for (const previous of ['/nix/store/x; reboot', `${'/tmp'}/old`, 'SYS/bin']) {
      const w = world({ booted: 'new' })
      w.writeTrial({ ...trialOf(w, '0'), previous: previous.replace('SYS', w.sys('old')) })
      expect(runTrial(w).status).toBe(1)
      expect(w.calls()).toEqual([])
      expect(exists(w, 'boot-trial.invalid')).toBe(true)
    }
  })

  it('the boot entry cannot be restored: no reboot (it would boot the new system again)', () => {
    const w = world({ booted: 'new', failing: ['old'] })
    w.writeTrial(trialOf(w, '0'))
    const r = runTrial(w)
    expect(r.status).toBe(1)
    expect(r.out).toMatch(/could not make .* the boot default again/)
    expect(w.calls()).not.toContain('systemctl reboot')
  })
})

/** The deploy's half (target/scripts/boot-trial-steps.sh), run on the test's state directory. */
const DEPLOY_STEPS = path.join(__dirname, '..', '..', 'src', 'target', 'scripts', 'boot-trial-steps.sh')
const deployStep = (w: World, step: string): string => {
  const script = fs
    .readFileSync(DEPLOY_STEPS, 'utf8')
    .replace(/^trial_dir=.*$/m, `trial_dir='${w.state}'`)
    .replace(/^P=.*$/m, `P='${w.env.NDA_SYSTEM_PROFILE}'`)
    .replace(/^booted_link=.*$/m, `booted_link='${w.env.NDA_BOOTED_SYSTEM}'`)
    .replace(/^boot_id_file=.*$/m, `boot_id_file='${w.env.NDA_BOOT_ID_FILE}'`)
  return spawnSync('sh', ['-c', script, 'sh', step], { env: w.env, encoding: 'utf8' }).stdout.trim()
}

/** The trial running in the background, and a way to wait for what it says. */
function startTrial(w: World): {
  said: (re: RegExp) => Promise<void>
  exit: Promise<number | null>
  out: () => string
} {
  const child = spawn('sh', [SCRIPT], { env: w.env })
  let out = ''
  const waiters: Array<{ re: RegExp; resolve: () => void }> = []
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString()
    for (const x of waiters.filter(x => x.re.test(out))) x.resolve()
  })
  return {
    said: re => new Promise<void>(resolve => (re.test(out) ? resolve() : waiters.push({ re, resolve }))),
    exit: new Promise<number | null>(resolve => child.on('exit', code => resolve(code))),
    out: () => out
  }
}

describe('the boot trial, protocol 2: a window for the login, then one for the confirmation', () => {
  const trial2 = (w: World, login: string, confirm: string) => ({
    ...trialOf(w, confirm),
    'login-seconds': login
  })

  it('no login within login-seconds: back to the previous system, saying so', () => {
    const w = world({ booted: 'new' })
    w.writeTrial(trial2(w, '1', '3600'))
    expect(runTrial(w).status).toBe(0)
    expect(w.calls()).toContain('systemctl reboot')
    expect(w.profileTarget()).toBe(w.sys('old'))
    expect(exists(w, 'boot-trial.expired')).toBe(true)
    expect(fs.readFileSync(path.join(w.state, 'boot-trial.rolled-back'), 'utf8')).toMatch(
      /did not log in within 1 s/
    )
    // The deploy that logs in now is told the trial is over.
    expect(deployStep(w, 'check-in')).toBe('expired')
  })

  it('a check-in (a slow network: late in the first window), then the confirmation: nothing undone', async () => {
    const w = world({ booted: 'new' })
    w.writeTrial(trial2(w, '60', '60'))
    // A marker of an earlier boot's trial (it went back while active) is removed at the start.
    fs.writeFileSync(path.join(w.state, 'boot-trial.active'), 'an-earlier-boot\n')
    const t = startTrial(w)
    await t.said(/waiting up to 60 s for the deploy to log in/)
    // While it waits, this boot's id marks it active (the deploy lock stays held for it).
    expect(fs.readFileSync(path.join(w.state, 'boot-trial.active'), 'utf8').trim()).toMatch(/^this-boot \d+$/)
    expect(deployStep(w, 'check-in')).toBe('reached')
    // Again (a reconnect of the same run): still reached, the second window not restarted.
    expect(deployStep(w, 'check-in')).toBe('reached')
    await t.said(/waiting up to 60 s for its checks and confirmation/)
    expect(deployStep(w, 'confirm')).toBe('confirmed')
    expect(await t.exit).toBe(0)
    expect(w.calls()).toEqual([])
    expect(w.profileTarget()).toBe(w.sys('new'))
    expect(exists(w, 'boot-trial.confirmed')).toBe(true)
    expect(exists(w, 'boot-trial.active')).toBe(false)
    // Sent again (its answer lost on the way back): answered as the first time, nothing undone.
    expect(deployStep(w, 'confirm')).toBe('confirmed')
    expect(w.profileTarget()).toBe(w.sys('new'))
  })

  it('a check-in, then no confirmation within confirm-seconds: back, and a late confirmation finds it expired', async () => {
    const w = world({ booted: 'new' })
    w.writeTrial(trial2(w, '60', '1'))
    const t = startTrial(w)
    await t.said(/to log in/)
    expect(deployStep(w, 'check-in')).toBe('reached')
    expect(await t.exit).toBe(0)
    expect(t.out()).toMatch(/not confirmed within 1 s: going back/)
    expect(w.profileTarget()).toBe(w.sys('old'))
    expect(deployStep(w, 'confirm')).toBe('expired')
  })

  it('a check-in, then a rejection (a failed check, a failure after the boot): back at once', async () => {
    const w = world({ booted: 'new' })
    w.writeTrial(trial2(w, '3600', '3600'))
    const t = startTrial(w)
    await t.said(/to log in/)
    expect(deployStep(w, 'check-in')).toBe('reached')
    expect(deployStep(w, 'reject')).toBe('rejected')
    expect(await t.exit).toBe(0)
    expect(t.out()).toMatch(/the deploy rejected it: going back/)
    expect(w.calls()).toContain('systemctl reboot')
    expect(w.profileTarget()).toBe(w.sys('old'))
  })

  it('nothing pending: the check-in says none', () => {
    const w = world({ booted: 'new' })
    expect(deployStep(w, 'check-in')).toBe('none')
  })

  it('a reboot cut the trial (before or after the check-in): the next boot of the new system goes back at once', () => {
    for (const checkedIn of [false, true]) {
      const w = world({ booted: 'new' })
      w.writeTrial(trial2(w, '3600', '3600'))
      // Its script ran in an earlier boot of the new system (and waited there when the reboot came).
      fs.writeFileSync(
        path.join(w.state, 'boot-trial.boots'),
        `${w.sys('new')} ${recordId(w)} an-earlier-boot\n`
      )
      if (checkedIn) expect(deployStep(w, 'check-in')).toBe('reached')
      const r = runTrial(w)
      expect(r.status).toBe(0)
      expectWentBack(w, /a reboot cut it/)
      expect(exists(w, 'boot-trial.reached')).toBe(false)
      // The deploy's confirmation, if it comes, finds it over.
      expect(deployStep(w, 'confirm')).toBe('expired')
    }
  })

  it('checked in in a boot its script never ran in (the unit late, the machine rebooted right after): the next boot goes back at once', () => {
    const w = world({ booted: 'new' })
    w.writeTrial(trial2(w, '3600', '3600'))
    expect(deployStep(w, 'check-in')).toBe('reached')
    // No boot-trial.boots: the script had not started in the boot of the check-in.
    fs.writeFileSync(w.env.NDA_BOOT_ID_FILE, 'the-next-boot\n')
    const r = runTrial(w)
    expect(r.status).toBe(0)
    expectWentBack(w, /a reboot cut it/)
    expect(deployStep(w, 'confirm')).toBe('expired')
  })

  it("an earlier trial's boots, left (another system's, or this system's by another record): not this trial's, it waits as at a first boot", async () => {
    const w = world({ booted: 'new' })
    w.writeTrial(trial2(w, '60', '60'))
    fs.writeFileSync(
      path.join(w.state, 'boot-trial.boots'),
      `${w.sys('other')} ${recordId(w)} an-earlier-boot\n${w.sys('new')} 1.1 an-earlier-boot\n`
    )
    const t = startTrial(w)
    await t.said(/waiting up to 60 s for the deploy to log in/)
    expect(deployStep(w, 'check-in')).toBe('reached')
    expect(deployStep(w, 'confirm')).toBe('confirmed')
    expect(await t.exit).toBe(0)
    expect(w.calls()).toEqual([])
    expect(exists(w, 'boot-trial.boots')).toBe(false)
  })

  it('a check-in or confirmation sent again after the target rebooted (its answer lost): expired, never a boot nobody checked', () => {
    const w = world({ booted: 'new' })
    w.writeTrial(trial2(w, '3600', '3600'))
    expect(deployStep(w, 'check-in')).toBe('reached')
    // The checks ran in this boot; the target reboots before the confirmation.
    fs.writeFileSync(w.env.NDA_BOOT_ID_FILE, 'the-next-boot\n')
    expect(deployStep(w, 'check-in')).toBe('expired')
    expect(deployStep(w, 'confirm')).toBe('expired')
    expect(exists(w, 'boot-trial.confirmed')).toBe(false)
    expect(exists(w, 'boot-trial.reached')).toBe(true)
    // In the boot of the check-in it is confirmed.
    fs.writeFileSync(w.env.NDA_BOOT_ID_FILE, 'this-boot\n')
    expect(deployStep(w, 'confirm')).toBe('confirmed')
  })

  it('checked in before its unit started (at its first boot): it waits for the verdict, and goes back without one', async () => {
    const w = world({ booted: 'new' })
    w.writeTrial(trial2(w, '3600', '1'))
    expect(deployStep(w, 'check-in')).toBe('reached')
    const t = startTrial(w)
    expect(await t.exit).toBe(0)
    expect(t.out()).toMatch(/not confirmed within 1 s: going back/)
    expect(w.profileTarget()).toBe(w.sys('old'))
    // Confirmed in its window instead: nothing undone.
    const w2 = world({ booted: 'new' })
    w2.writeTrial(trial2(w2, '3600', '60'))
    expect(deployStep(w2, 'check-in')).toBe('reached')
    const t2 = startTrial(w2)
    await t2.said(/waiting up to 60 s for its checks and confirmation/)
    expect(deployStep(w2, 'confirm')).toBe('confirmed')
    expect(await t2.exit).toBe(0)
    expect(w2.calls()).toEqual([])
  })
})

describe('a one-shot boot (reboot.sh made the new system an entry booted once; nixos/boot-once.sh)', () => {
  /** The profile as reboot.sh leaves it: generation 1 (the old system) the default again, 2 the new. */
  const oneShot = (booted: string, onceText: string, failing?: string[]): { w: World; once: string } => {
    const w = world({ booted, failing })
    const profile = w.env.NDA_SYSTEM_PROFILE
    fs.unlinkSync(profile)
    fs.symlinkSync('system-1-link', profile)
    const once = path.join(w.root, 'nix-deploy-once')
    fs.writeFileSync(once, onceText)
    w.writeTrial({
      ...trialOf(w, '3600'),
      'login-seconds': '3600',
      once,
      'new-generation': '2'
    })
    return { w, once }
  }
  const field = (w: World, file: string, name: string): string | undefined =>
    fs
      .readFileSync(path.join(w.state, file), 'utf8')
      .split('\n')
      .find(l => l.startsWith(`${name}=`))
      ?.slice(name.length + 1)

  it('confirmed: the new system made the default (its generation the profile, its boot entry)', () => {
    const { w } = oneShot('new', '')
    expect(deployStep(w, 'check-in')).toBe('reached')
    expect(deployStep(w, 'confirm')).toBe('confirmed')
    expect(w.profileTarget()).toBe(w.sys('new'))
    expect(w.calls()).toEqual([`nix-env -p ${w.env.NDA_SYSTEM_PROFILE} --switch-generation 2`, 'new boot'])
    expect(exists(w, 'boot-trial.confirmed')).toBe(true)
    // Sent again (the first one's answer lost, maybe cut before its boot entry): the same steps again.
    expect(deployStep(w, 'confirm')).toBe('confirmed')
    expect(w.profileTarget()).toBe(w.sys('new'))
    expect(w.calls().slice(2)).toEqual([
      `nix-env -p ${w.env.NDA_SYSTEM_PROFILE} --switch-generation 2`,
      'new boot'
    ])
  })

  it('confirmed, but its boot entry cannot be written: not-default (the next boot runs the previous system)', () => {
    const { w } = oneShot('new', '', ['new'])
    expect(deployStep(w, 'check-in')).toBe('reached')
    expect(deployStep(w, 'confirm')).toBe('not-default')
    // The profile back with the boot entry: a deploy of the new system sees it still to do.
    expect(w.profileTarget()).toBe(w.sys('old'))
  })

  it('a boot of the previous system finds the trial pending: its trial settles it as fell-back, nothing else done', () => {
    const { w, once } = oneShot('old', '')
    expect(runTrial(w).status).toBe(0)
    expect(w.calls()).toEqual([])
    expect(w.profileTarget()).toBe(w.sys('old'))
    expect(exists(w, 'boot-trial')).toBe(false)
    expect(field(w, 'boot-trial.fell-back', 'verdict')).toBe('fell-back')
    expect(fs.readFileSync(path.join(w.state, 'boot-trial.rolled-back'), 'utf8')).toMatch(
      /did not reach user space/
    )
    expect(fs.readFileSync(once, 'utf8')).toBe('')
    // The deploy, logging in after that, reads the same verdict.
    expect(deployStep(w, 'fell-back')).toBe('fell-back')
  })

  it('the one-shot file as written (the boot loader has no hook): not-run, and the file emptied so no later boot runs it', () => {
    const { w, once } = oneShot('old', 'nda_label=nixos-2\n')
    expect(deployStep(w, 'fell-back')).toBe('not-run')
    expect(fs.readFileSync(once, 'utf8')).toBe('')
    expect(field(w, 'boot-trial.fell-back', 'verdict')).toBe('not-run')
    // The target's trial, starting after it, finds nothing pending.
    expect(runTrial(w).out).toMatch(/no trial pending/)
  })

  it('checked in, then a reboot (a power cut, a crash): the boot loader ran the previous system, and its trial ends the record', () => {
    const { w } = oneShot('old', '')
    expect(deployStep(w, 'check-in')).toBe('reached')
    expect(runTrial(w).status).toBe(0)
    expect(w.calls()).toEqual([])
    expect(w.profileTarget()).toBe(w.sys('old'))
    expect(exists(w, 'boot-trial.reached')).toBe(false)
    expect(exists(w, 'boot-trial.expired')).toBe(true)
    expect(fs.readFileSync(path.join(w.state, 'boot-trial.rolled-back'), 'utf8')).toMatch(
      /rebooted after the deploy logged in/
    )
    expect(deployStep(w, 'confirm')).toBe('expired')
  })

  it('the new system booted: fell-back has nothing to settle', () => {
    const { w } = oneShot('new', '')
    expect(deployStep(w, 'fell-back')).toBe('none')
    expect(exists(w, 'boot-trial')).toBe(true)
  })
})

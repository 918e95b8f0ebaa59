import { execFileSync, spawn } from 'child_process'
import { ownerDescription } from '../../src/target/lock/runner'
import { LOCK_SCRIPT, parseLockAnswer } from '../../src/target/lock/on-target'
import { SCRIPT_FILES } from '../../src/target/scripts.generated'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'

describe('the lock script, run for real against a temporary directory', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-lock-'))
  const lock = path.join(dir, 'lock')
  const owner = path.join(lock, 'owner')
  const lockOp = (verb: string, id: string, lease = 600, desc = `run ${id}`): string =>
    execFileSync('sh', ['-c', LOCK_SCRIPT, 'sh', verb, lock, id, String(lease), desc], { encoding: 'utf8' })
  const take = (id: string, lease = 600, desc?: string) => lockOp('acquire', id, lease, desc)
  const uptime = (): number => Math.floor(Number(fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0]))
  const bootId = (): string => fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
  const plant = (lines: string[]): void => {
    fs.mkdirSync(lock, { recursive: true })
    fs.writeFileSync(owner, lines.join('\n') + '\n')
  }
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

  it("gives the lock to one run, tells the next who holds it (seconds left by the target's clock), lets the holder renew", () => {
    expect(parseLockAnswer(take('a'))).toEqual({ acquired: true })
    const held = parseLockAnswer(take('b'))
    expect(held).toEqual({
      acquired: false,
      holder: { id: 'a', secondsLeft: expect.any(Number), description: 'run a' }
    })
    expect(!held.acquired && held.holder.secondsLeft).toBeGreaterThan(590)
    expect(parseLockAnswer(take('a'))).toEqual({ acquired: true })
    expect(lockOp('renew', 'a').trim()).toBe('renewed')
    expect(lockOp('renew', 'b').trim()).toBe('lost')
  })
  it("keeps the lease in the target's uptime and boot id, never in a wall clock", () => {
    const [id, lease, desc] = fs.readFileSync(owner, 'utf8').split('\n')
    expect(id).toBe('a')
    const [v, boot, expiry] = lease.split(' ')
    expect([v, boot]).toEqual(['v2', bootId()])
    expect(Number(expiry) - uptime()).toBeGreaterThan(590)
    expect(Number(expiry) - uptime()).toBeLessThanOrEqual(600)
    expect(desc).toBe('run a')
  })
  it('only the holder can release', () => {
    expect(lockOp('release', 'b').trim()).toBe('not-held')
    expect(fs.existsSync(owner)).toBe(true)
    expect(lockOp('release', 'a').trim()).toBe('released')
    expect(fs.existsSync(owner)).toBe(false)
  })
  it("takes over a lease that ran out, one from another boot, and an older action's expired one", () => {
    plant(['crashed', `v2 ${bootId()} ${uptime() - 5}`, 'a run that died'])
    expect(take('c').trim()).toBe('acquired')
    // A lock whose lease is far in the future, but from before a reboot: uptime restarted, so stale.
    plant(['before-reboot', `v2 00000000-0000-0000-0000-000000000000 ${uptime() + 100000}`, 'x'])
    expect(take('d').trim()).toBe('acquired')
    // An older action's owner file: epoch expiry on line 2, honoured by the wall clock it names.
    plant(['old', String(Math.floor(Date.now() / 1000) - 5), 'old'])
    expect(take('e').trim()).toBe('acquired')
    plant(['old-live', String(Math.floor(Date.now() / 1000) + 300), 'old live'])
    expect(parseLockAnswer(take('f')).acquired).toBe(false)
    // ... but not for more than an hour: after a reboot a Pi without RTC may count from long ago.
    plant(['old-clock', String(Math.floor(Date.now() / 1000) + 86400), 'clock far behind'])
    expect(take('g').trim()).toBe('acquired')
  })
  it('held through a reboot on trial (v3): in the next boot, while the trial is pending and within its window', () => {
    const otherBoot = '00000000-0000-0000-0000-000000000000'
    const trial = path.join(dir, 'boot-trial')
    const reached = path.join(dir, 'boot-trial.reached')
    try {
      // The boot it was written in: its expiry, as v2.
      plant(['rebooting', `v3 ${bootId()} ${uptime() + 100} ${uptime() + 5000}`, 'a run rebooting'])
      expect(parseLockAnswer(take('x'))).toMatchObject({ acquired: false, holder: { id: 'rebooting' } })
      // The next boot, the trial pending (before and after the deploy's check-in): held, said so.
      fs.writeFileSync(trial, '')
      plant(['rebooting', `v3 ${otherBoot} 10 ${uptime() + 5000}`, 'a run rebooting'])
      const held = parseLockAnswer(take('x'))
      expect(held).toMatchObject({ acquired: false, holder: { id: 'rebooting', bootTrial: true } })
      expect(!held.acquired && held.holder.secondsLeft).toBeGreaterThan(4900)
      fs.renameSync(trial, reached)
      expect(parseLockAnswer(take('x')).acquired).toBe(false)
      // Past its window (a trial record nobody ended): free.
      plant(['rebooting', `v3 ${otherBoot} 10 ${uptime() - 1}`, 'a run rebooting'])
      expect(take('x').trim()).toBe('acquired')
      // The trial over (confirmed, or gone back): free.
      fs.renameSync(reached, path.join(dir, 'boot-trial.confirmed'))
      plant(['rebooting', `v3 ${otherBoot} 10 ${uptime() + 5000}`, 'a run rebooting'])
      expect(take('y').trim()).toBe('acquired')
    } finally {
      for (const f of ['boot-trial', 'boot-trial.reached', 'boot-trial.confirmed'])
        fs.rmSync(path.join(dir, f), { force: true })
    }
  })
  it('held for a trial still to end in the boot it runs in: after its run renewed there and went (or released), while its script goes back', async () => {
    const trial = path.join(dir, 'boot-trial')
    const reached = path.join(dir, 'boot-trial.reached')
    const active = path.join(dir, 'boot-trial.active')
    try {
      // The run's lease after the reboot, renewed in this boot: still v3, its window kept.
      const window = uptime() + 5000
      plant(['trial-run', `v3 00000000-0000-0000-0000-000000000000 10 ${window}`, 'a run on trial'])
      fs.writeFileSync(reached, '')
      expect(lockOp('renew', 'trial-run', 60).trim()).toBe('renewed')
      const [v, boot, expiry, kept] = fs.readFileSync(owner, 'utf8').split('\n')[1].split(' ')
      expect([v, boot, kept]).toEqual(['v3', bootId(), String(window)])
      expect(Number(expiry) - uptime()).toBeGreaterThan(50)
      // That run cancelled: its lease runs out, the checked-in trial still pending: held, said so.
      plant(['trial-run', `v3 ${bootId()} ${uptime() - 5} ${uptime() + 5000}`, 'a run on trial'])
      expect(parseLockAnswer(take('queued'))).toMatchObject({
        acquired: false,
        holder: { id: 'trial-run', bootTrial: true }
      })
      // Released with the trial still to end (a check-in that failed): held for the trial.
      plant(['trial-run', `v3 ${bootId()} ${uptime() + 60} ${uptime() + 5000}`, 'a run on trial'])
      expect(lockOp('release', 'trial-run').trim()).toBe('released')
      expect(parseLockAnswer(take('queued'))).toMatchObject({ acquired: false, holder: { bootTrial: true } })
      // Its window over, its script still going back in this boot: held; once it ended, free.
      fs.rmSync(reached)
      const script = spawn('sh', ['-c', 'sleep 60', 'boot-trial.sh'], { stdio: 'ignore' })
      try {
        fs.writeFileSync(active, `${bootId()} ${script.pid}\n`)
        plant(['trial-run', `v3 ${bootId()} ${uptime() - 5} ${uptime() - 1}`, 'a run on trial'])
        expect(parseLockAnswer(take('queued'))).toMatchObject({
          acquired: false,
          holder: { bootTrial: true }
        })
      } finally {
        script.kill('SIGKILL')
      }
      // Its marker left by a script that no longer runs (killed): nothing past the window.
      if (script.exitCode === null && script.signalCode === null)
        await new Promise(r => script.once('exit', r))
      expect(take('queued').trim()).toBe('acquired')
      // (A script that ended removes its marker.)
      fs.rmSync(active)
      // No trial: a v3 lease released is gone, as any other.
      plant(['trial-run', `v3 ${bootId()} ${uptime() + 60} ${uptime() + 5000}`, 'a run on trial'])
      expect(lockOp('release', 'trial-run').trim()).toBe('released')
      expect(fs.existsSync(owner)).toBe(false)
    } finally {
      for (const f of [trial, reached, active]) fs.rmSync(f, { force: true })
    }
  })

  it("a trial's lock is taken over only for that system and only when it is what booted", () => {
    const sys = `/nix/store/${'s'.repeat(32)}-nixos-system-trial`
    const trial = path.join(dir, 'boot-trial')
    const acquireAs = (system: string): string =>
      execFileSync(
        'sh',
        [
          '-c',
          `${SCRIPT_FILES['lock.sh']}\nlock_dir=$1 lock_id=$2 lease=90 lock_desc=x lock_trial_system=$3\nlock_op acquire`,
          'sh',
          lock,
          're-run',
          system
        ],
        { encoding: 'utf8' }
      )
    try {
      fs.writeFileSync(trial, `new=${sys}\n`)
      plant(['cancelled', `v3 00000000-0000-0000-0000-000000000000 10 ${uptime() + 5000}`, 'a cancelled run'])
      // Another system: held. The same system, but this machine did not boot it (no /run/booted-system
      // naming it): held too.
      expect(parseLockAnswer(acquireAs(`/nix/store/${'o'.repeat(32)}-other`))).toMatchObject({
        acquired: false
      })
      expect(fs.existsSync('/run/booted-system') && fs.realpathSync('/run/booted-system') === sys).toBe(false)
      expect(parseLockAnswer(acquireAs(sys))).toMatchObject({ acquired: false, holder: { bootTrial: true } })
      expect(fs.readFileSync(owner, 'utf8').split('\n')[0]).toBe('cancelled')
    } finally {
      fs.rmSync(trial, { force: true })
    }
  })
  it('hold-through-boot: only the holder turns its lease into a v3 one, keeping its description', () => {
    const hold = (id: string): string =>
      execFileSync(
        'sh',
        [
          '-c',
          `${SCRIPT_FILES['lock.sh']}\nlock_dir=$1 lock_id=$2 lease=90 lock_window=$3 lock_desc=''\nlock_op hold-through-boot`,
          'sh',
          lock,
          id,
          '700'
        ],
        { encoding: 'utf8' }
      ).trim()
    plant(['holder', `v2 ${bootId()} ${uptime() + 90}`, 'the holder, its description'])
    expect(hold('someone-else')).toBe('lost')
    expect(hold('holder')).toBe('held-through-boot')
    const [id, lease, desc] = fs.readFileSync(owner, 'utf8').split('\n')
    expect(id).toBe('holder')
    expect(lease.split(' ').slice(0, 2)).toEqual(['v3', bootId()])
    expect(lease.split(' ')[3]).toBe('700')
    expect(desc).toBe('the holder, its description')
  })
  it('a renewal after another run took the lock over says lost, and cannot take it back', () => {
    plant(['slow', `v2 ${bootId()} ${uptime() - 1}`, 'slow'])
    expect(take('fast').trim()).toBe('acquired')
    expect(lockOp('renew', 'slow').trim()).toBe('lost')
    expect(lockOp('release', 'slow').trim()).toBe('not-held')
    expect(fs.readFileSync(owner, 'utf8').split('\n')[0]).toBe('fast')
  })
  it('many runs racing for an expired lock: exactly one takes it, every round', async () => {
    const { spawn } = require('child_process') as typeof import('child_process')
    const attempt = (id: string): Promise<string> =>
      new Promise(resolve => {
        const c = spawn('sh', ['-c', LOCK_SCRIPT, 'sh', 'acquire', lock, id, '600', id])
        let out = ''
        c.stdout.on('data', (d: Buffer) => (out += d.toString()))
        c.on('close', () => resolve(out.trim().split('\n')[0]))
      })
    for (let round = 0; round < 10; round++) {
      plant(['dead', `v2 ${bootId()} ${uptime() - 10}`, 'dead'])
      const answers = await Promise.all(Array.from({ length: 8 }, (_, i) => attempt(`r${round}-${i}`)))
      expect(answers.filter(a => a === 'acquired')).toHaveLength(1)
      expect(answers.filter(a => a === 'held')).toHaveLength(7)
      const winner = answers.findIndex(a => a === 'acquired')
      expect(fs.readFileSync(owner, 'utf8').split('\n')[0]).toBe(`r${round}-${winner}`)
    }
  }, 60_000)
  it('treats a hostile description as text', () => {
    lockOp('release', 'fast')
    fs.rmSync(lock, { recursive: true, force: true })
    const desc = '$(touch /tmp/nda-pwned) `id` ; rm -rf /'
    take('g', 600, desc)
    const answer = parseLockAnswer(take('h'))
    expect(!answer.acquired && answer.holder.description).toBe(desc)
    expect(fs.existsSync('/tmp/nda-pwned')).toBe(false)
  })
  it('a renewal keeps the description exactly, its spaces and backslashes too; a lock under a directory not there yet is made', () => {
    lockOp('release', 'g')
    fs.rmSync(lock, { recursive: true, force: true })
    const desc = '  two  spaces \\n a \\ backslash\t(tab) '
    take('k', 600, desc)
    expect(lockOp('renew', 'k').trim()).toBe('renewed')
    expect(fs.readFileSync(owner, 'utf8').split('\n')[2]).toBe(desc)
    const answer = parseLockAnswer(take('m'))
    expect(!answer.acquired && answer.holder.description).toBe(desc)
    lockOp('release', 'k')

    const nested = path.join(dir, 'not', 'yet', 'lock')
    const out = execFileSync('sh', ['-c', LOCK_SCRIPT, 'sh', 'acquire', nested, 'n', '600', 'run n'], {
      encoding: 'utf8'
    })
    expect(out.trim()).toBe('acquired')
    expect(fs.readFileSync(path.join(nested, 'owner'), 'utf8').split('\n')[0]).toBe('n')
    expect(fs.existsSync(path.join(dir, 'not', 'yet', 'lock.flock'))).toBe(true)
  })
  it('describes the run without newlines', () => {
    expect(
      ownerDescription({ GITHUB_REPOSITORY: 'me/pi', GITHUB_RUN_ID: '42', GITHUB_WORKFLOW: 'deploy\nx' })
    ).toMatch(/^nix-deploy-action https:\/\/github.com\/me\/pi\/actions\/runs\/42 \(deploy x, started /)
  })
})

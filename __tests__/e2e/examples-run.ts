import * as fs from 'fs'
import * as path from 'path'
import { parse } from 'yaml'
import { GitHubStandIn } from './github-service'
import { ActionRun, key, ROOT, runAction, testbed } from './harness'

/**
 * The workflows users copy (examples/) run as they are: each nix-deploy-action step's `with:` (and
 * `env:`) block is read from the file, every `${{ … }}` in it replaced from the map below, and run
 * against the testbed (examples.test.ts; the systemd Pi's in examples-spi.test.ts, which runs in
 * that Pi's lane of scripts/test.sh).
 */

/** Every `${{ … }}` the examples' steps use, by its text: an example with a new one fails here until it is mapped. */
export function expressions(
  t: ReturnType<typeof testbed>,
  github: Pick<GitHubStandIn, 'token'>,
  extraKnownHosts: string[] = []
): Record<string, string> {
  const knownHosts = [fs.readFileSync(t.TESTBED_KNOWN_HOSTS, 'utf8').trim(), ...extraKnownHosts].join('\n')
  return {
    'secrets.PI_DEPLOY_KEY': key('deploy'),
    'vars.PI_KNOWN_HOSTS': knownHosts,
    "inputs.host || 'pi3'": 'pi3',
    "inputs.mode || 'switch'": 'switch',
    'inputs.machines': '',
    'github.token': github.token,
    'secrets.CF_ACCESS_CLIENT_ID': 'stand-in-client.access',
    'secrets.CF_ACCESS_CLIENT_SECRET': 'stand-in-service-token-secret'
  }
}

/** The Pi's host key line under another name (the name a tunnel's host goes by). */
export function piKeyAs(name: string): string {
  const pub = fs.readFileSync(path.join(testbed().TESTBED_KEYS, 'pi_host_ed25519.pub'), 'utf8')
  return `${name} ${pub.split(' ').slice(0, 2).join(' ')}`
}

interface ActionStep {
  with: Record<string, string>
  env: Record<string, string>
}

/** The nix-deploy-action step(s) of an example's job, with every expression replaced. */
export function exampleStep(file: string, job: string, values: Record<string, string>): ActionStep {
  const doc = parse(fs.readFileSync(path.join(ROOT, 'examples', file), 'utf8')) as {
    jobs: Record<
      string,
      { steps: Array<{ uses?: string; with?: Record<string, unknown>; env?: Record<string, unknown> }> }
    >
  }
  const steps = doc.jobs[job].steps.filter(s => s.uses?.startsWith('org/nix-deploy-action@'))
  expect(steps).toHaveLength(1)
  const fill = (block: Record<string, unknown> = {}): Record<string, string> =>
    Object.fromEntries(
      Object.entries(block).map(([k, v]) => [
        k,
        String(v).replace(/\$\{\{\s*(.*?)\s*\}\}/g, (_, expr: string) => {
          if (!(expr in values)) throw new Error(`examples/${file}: no test value for \${{ ${expr} }}`)
          return values[expr]
        })
      ])
    )
  return { with: fill(steps[0].with), env: fill(steps[0].env) }
}

/** The jobs with a nix-deploy-action step, over all examples: each must be run below or say why not. */
export function allExampleJobs(): string[] {
  const jobs: string[] = []
  for (const file of fs.readdirSync(path.join(ROOT, 'examples')).filter(f => f.endsWith('.yml'))) {
    const doc = parse(fs.readFileSync(path.join(ROOT, 'examples', file), 'utf8')) as {
      jobs: Record<string, { steps: Array<{ uses?: string }> }>
    }
    for (const [job, j] of Object.entries(doc.jobs))
      if (j.steps.some(s => s.uses?.startsWith('org/nix-deploy-action@'))) jobs.push(`${file}#${job}`)
  }
  return jobs.sort()
}

/** Run in examples.test.ts, or on the systemd Pi in examples-spi.test.ts. */
export const RUN = [
  'pr-dry-run.yml#build',
  'deploy.yml#deploy',
  'deploy-github-hosted.yml#deploy',
  'deploy-cloudflare-tunnel.yml#deploy',
  'deploy-tailscale.yml#deploy',
  'nixops-network.yml#deploy',
  'pr-dry-run.yml#dry-activate'
]
/** Not run here, and why. */
export const NOT_RUN: Record<string, string> = {
  // Its steps are what __tests__/e2e/shards.test.ts runs against an HTTP binary cache and 6 light
  // Pis (publish-to, deploy-plan with shard, mode report); the file itself names an S3 bucket.
  'fleet-fanout.yml#build': 'publishes to an S3 bucket (shards.test.ts: the same inputs, an HTTP cache)',
  'fleet-fanout.yml#canary': "a shard of the build job's plan (shards.test.ts)",
  'fleet-fanout.yml#shards': "shards of the build job's plan (shards.test.ts: three at once)",
  'fleet-fanout.yml#report': 'mode report over the plan (shards.test.ts)'
}

/**
 * The inputs the runner fills in from action.yml's defaults when a step does not set them, where the
 * default is an expression (the action's code has the plain defaults itself).
 */
export function expressionDefaults(values: Record<string, string>): Record<string, string> {
  const action = parse(fs.readFileSync(path.join(ROOT, 'action.yml'), 'utf8')) as {
    inputs: Record<string, { default?: string }>
  }
  const out: Record<string, string> = {}
  for (const [name, input] of Object.entries(action.inputs)) {
    const m = /^\$\{\{\s*(.*?)\s*\}\}$/.exec(input.default ?? '')
    if (m) {
      if (!(m[1] in values))
        throw new Error(`action.yml: no test value for the default \${{ ${m[1]} }} of ${name}`)
      out[name] = values[m[1]]
    }
  }
  return out
}

/**
 * Runs an example job's step (`file.yml#job`) as the runner would: action.yml's expression
 * defaults, the step's `with:` (then `overrides`), its `env:` (then `env`), in `workspace`
 * (default the fixture flake).
 */
export function runExample(
  name: string,
  values: Record<string, string>,
  opts: { overrides?: Record<string, string>; env?: Record<string, string>; workspace?: string } = {}
): Promise<ActionRun> {
  const [file, job] = name.split('#')
  const step = exampleStep(file, job, values)
  return runAction(
    { ...expressionDefaults(values), ...step.with, ...opts.overrides },
    {
      env: { ...step.env, ...opts.env },
      workspace: opts.workspace ?? path.join(testbed().TESTBED, 'fixture')
    }
  )
}

import { expressions, runExample } from './examples-run'
import { describeE2E, fixturePath, piState, resetPi, testbed } from './harness'

/**
 * examples/deploy.yml on the systemd Pi (spi, straight over its LAN link): apart from
 * examples.test.ts so that it runs in the systemd Pis' lane of scripts/test.sh. It talks to no
 * GitHub: the job's token is a value that is never used.
 */
const NO_GITHUB = { token: 'ghs_unused-by-these-examples' }

describeE2E(
  'the examples users copy, on the systemd Pi',
  () => {
    const deployed = (): string => piState('spi').current

    beforeAll(() => {
      for (const c of ['pi3', 'pi3-degraded']) fixturePath(c)
    }, 300_000)
    afterAll(() => {
      // The degraded example leaves a failed unit behind: the systemd Pi starts the next suite clean.
      resetPi('spi')
    }, 120_000)

    it('deploy.yml on the systemd Pi: its health checks pass on a healthy system', async () => {
      resetPi('spi')
      const t = testbed()
      const run = await runExample('deploy.yml#deploy', {
        ...expressions(t, NO_GITHUB),
        'vars.PI_HOST': t.TESTBED_SPI_DIRECT
      })
      expect(run.exitCode).toBe(0)
      expect(run.outputs.result).toBe('deployed')
      expect(run.summary).toMatch(/\| Health checks \| health checks passed on attempt 1/)
      expect(deployed()).toBe(fixturePath('pi3'))
    }, 300_000)

    it('deploy.yml on the systemd Pi: its health checks fail on a degraded system, which is rolled back', async () => {
      resetPi('spi')
      const t = testbed()
      const before = deployed()
      const run = await runExample(
        'deploy.yml#deploy',
        {
          ...expressions(t, NO_GITHUB),
          "inputs.host || 'pi3'": 'pi3-degraded',
          'vars.PI_HOST': t.TESTBED_SPI_DIRECT
        },
        // A degraded system stays degraded: its checks fail on every try, so 10 s of them say as
        // much as the example's 60.
        { overrides: { 'health-timeout': '10' } }
      )
      expect(run.exitCode).not.toBe(0)
      expect(run.outputs.result).toBe('rolled-back')
      expect(run.summary).toMatch(/systemctl is-system-running --wait/)
      expect(deployed()).toBe(before)
    }, 300_000)
  },
  { pis: ['spi', 'spi2'] }
)

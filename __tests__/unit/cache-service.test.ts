import { isFeatureAvailable } from '@actions/cache'
import { cacheServiceAvailable } from '../../src/cache/store-cache'

/**
 * cacheServiceAvailable answers "no cache service" without loading dist/cache/ when the runner gives
 * neither of the service's URLs: only where @actions/cache's own isFeatureAvailable says so too
 * (checked here against the installed version, so an upgrade that reads another variable fails).
 */
describe('the cache service check that does not load @actions/cache', () => {
  const GHES = 'https://ghes.example.com'
  const without = [
    {},
    { ACTIONS_CACHE_SERVICE_V2: 'true' },
    { GITHUB_SERVER_URL: GHES },
    { ACTIONS_CACHE_SERVICE_V2: 'true', GITHUB_SERVER_URL: GHES },
    { ACTIONS_CACHE_URL: '', ACTIONS_RESULTS_URL: '' },
    { ACTIONS_RUNTIME_TOKEN: 'token', ACTIONS_CACHE_MODE: 'read' }
  ]
  const saved = { ...process.env }
  afterEach(() => {
    process.env = { ...saved }
  })

  it.each(without.map(env => [JSON.stringify(env), env] as const))(
    'no service with %s, as @actions/cache says',
    async (_, env) => {
      process.env = { ...env }
      expect(isFeatureAvailable()).toBe(false)
      await expect(cacheServiceAvailable({ ...env })).resolves.toBe(false)
    }
  )

  it('@actions/cache sees a service with either URL (v1 and v2): those are asked of it', () => {
    process.env = { ACTIONS_CACHE_URL: 'https://cache.example.com/' }
    expect(isFeatureAvailable()).toBe(true)
    process.env = { ACTIONS_CACHE_SERVICE_V2: 'true', ACTIONS_RESULTS_URL: 'https://results.example.com/' }
    expect(isFeatureAvailable()).toBe(true)
  })
})

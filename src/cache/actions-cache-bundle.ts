/**
 * @actions/cache and its tar module (whose extractTar store-cache.ts replaces), one module graph:
 * the entry of dist/cache/, a bundle of its own (scripts/bundle.js), loaded only when the cache is used.
 */
import * as cache from '@actions/cache'
import * as tar from '@actions/cache/lib/internal/tar'

export { cache, tar }

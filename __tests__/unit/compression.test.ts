import { chooseCodec } from '../../src/deploy/compression'

describe('compression choice', () => {
  const all = () => true
  it('auto prefers zstd, then gzip, then none, by what both sides have', () => {
    expect(chooseCodec('auto', all, new Set(['zstd', 'xz', 'gzip'])).codec.name).toBe('zstd')
    expect(chooseCodec('auto', all, new Set(['xz', 'gzip'])).codec.name).toBe('gzip')
    expect(chooseCodec('auto', t => t !== 'zstd', new Set(['zstd', 'gzip'])).codec.name).toBe('gzip')
    expect(chooseCodec('auto', all, new Set()).codec.name).toBe('none')
  })
  it('honours an explicit codec, or says why it fell back', () => {
    expect(chooseCodec('xz', all, new Set(['xz'])).codec.name).toBe('xz')
    expect(chooseCodec('none', all, new Set(['zstd'])).codec.name).toBe('none')
    const r = chooseCodec('xz', all, new Set(['zstd']))
    expect(r.codec.name).toBe('zstd')
    expect(r.note).toMatch(/xz is not available on the target; using zstd/)
  })
})

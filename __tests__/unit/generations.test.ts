import { generationsToDelete } from '../../src/deploy/generations'
import { parseGenerations } from '../../src/target/parse'

describe('keep-generations', () => {
  const S = (c: string) => '/nix/store/' + c.repeat(32) + '-nixos-system'
  const gens = parseGenerations(
    [
      `system-1-link ${S('a')}`,
      `system-2-link ${S('b')}`,
      `system-3-link ${S('c')}`,
      `system-4-link ${S('d')}`,
      `system-5-link ${S('c')}`,
      'garbage',
      'running x'
    ].join('\n')
  ).generations
  it('parses generation links', () => {
    expect(gens.map(g => g.number)).toEqual([1, 2, 3, 4, 5])
  })
  it('keeps the newest N', () => {
    expect(generationsToDelete(gens, 2, { profileGeneration: 5 })).toEqual([1, 2, 3])
  })
  it('keeps a generation for the running and the booted system when no kept one holds it', () => {
    expect(
      generationsToDelete(gens, 1, { profileGeneration: 5, runningPath: S('a'), bootedPath: S('b') })
    ).toEqual([3, 4])
    // gen 5 already holds c: gen 3 (also c) need not stay.
    expect(generationsToDelete(gens, 1, { profileGeneration: 5, runningPath: S('c') })).toEqual([1, 2, 3, 4])
  })
  it('never deletes the current profile generation', () => {
    expect(generationsToDelete(gens, 1, { profileGeneration: 2 })).toEqual([1, 3, 4])
  })
})

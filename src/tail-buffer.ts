// A bounded collector for what a command prints (see its users: local and remote commands).
/** Collects a stream's chunks, keeping at most `max` bytes: the last ones. */
export class TailBuffer {
  private chunks: Buffer[] = []
  private length = 0
  truncated = false
  constructor(private readonly max: number) {}
  push(d: Buffer): void {
    this.chunks.push(d)
    this.length += d.length
    if (this.length > this.max * 2) this.compact()
  }
  private compact(): void {
    const all = Buffer.concat(this.chunks)
    const kept = all.subarray(Math.max(0, all.length - this.max))
    if (kept.length < all.length) this.truncated = true
    this.chunks = [Buffer.from(kept)]
    this.length = kept.length
  }
  toString(): string {
    this.compact()
    return this.chunks[0]?.toString('utf8') ?? ''
  }
}

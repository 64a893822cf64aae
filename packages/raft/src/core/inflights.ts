/**
 * The window of appends sent to a follower in replicate state and not yet acknowledged. Each
 * slot records the last index of one message and its payload bytes; an acknowledgement frees
 * every slot up to the acknowledged index. The leader stops sending when the window is full
 * (by count, or by bytes when a byte limit is set), which bounds memory and network queueing.
 */
export class Inflights {
  private indexes: number[] = [];
  private sizes: number[] = [];
  private head = 0;
  private bytes = 0;

  constructor(
    readonly capacity: number,
    readonly maxBytes = 0,
  ) {
    if (!Number.isInteger(capacity) || capacity <= 0) {
      throw new RangeError(`capacity: must be a positive integer, got ${capacity}`);
    }
  }

  add(lastIndex: number, bytes: number): void {
    if (this.full()) throw new Error('inflights: add() on a full window');
    const prev = this.indexes[this.indexes.length - 1];
    if (this.count() > 0 && prev !== undefined && lastIndex <= prev) {
      throw new RangeError(`inflights: index ${lastIndex} is not above the last in flight ${prev}`);
    }
    this.indexes.push(lastIndex);
    this.sizes.push(bytes);
    this.bytes += bytes;
  }

  /** Frees every message whose last index is <= `to`. */
  freeLE(to: number): void {
    while (this.head < this.indexes.length && this.indexes[this.head]! <= to) {
      this.bytes -= this.sizes[this.head]!;
      this.head++;
    }
    // Compact now and then so the arrays do not grow without bound.
    if (this.head > 64 && this.head * 2 > this.indexes.length) {
      this.indexes = this.indexes.slice(this.head);
      this.sizes = this.sizes.slice(this.head);
      this.head = 0;
    }
  }

  /** Frees the oldest message in flight. */
  freeFirstOne(): void {
    const first = this.indexes[this.head];
    if (first !== undefined) this.freeLE(first);
  }

  full(): boolean {
    return this.count() >= this.capacity || (this.maxBytes > 0 && this.bytes >= this.maxBytes);
  }

  count(): number {
    return this.indexes.length - this.head;
  }

  inflightBytes(): number {
    return this.bytes;
  }

  reset(): void {
    this.indexes = [];
    this.sizes = [];
    this.head = 0;
    this.bytes = 0;
  }
}

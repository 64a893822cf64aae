import { resourceExhausted } from '@hyperfarm/api';

const toNumber = (mac: string): number => parseInt(mac.replace(/-/g, ''), 16);
const toText = (n: number): string => n.toString(16).toUpperCase().padStart(12, '0').match(/../g)!.join('-');

/**
 * The host's dynamic MAC range (prefix 00-15-5D, Microsoft's OUI for Hyper-V). Hands out the
 * lowest free address so assignment is deterministic; addresses inside the range that a VM
 * brings along (static, or kept through a migration) are marked taken.
 */
export class MacPool {
  private first: number;
  /**
   * The first address as text, worked out when the range is set: the host's report carries it
   * on every lease answer (a 1,000-host farm's leader asks 66 times a second), and formatting it
   * each time was work for nothing.
   */
  private firstText: string;
  private readonly taken = new Set<number>();

  constructor(
    start: string,
    public size: number,
  ) {
    this.first = toNumber(start);
    this.firstText = toText(this.first);
  }

  get range(): { start: string; size: number } {
    return { start: this.firstText, size: this.size };
  }

  /**
   * Moves the pool to the range the farm gave this host (so MACs are unique across the farm),
   * keeping the addresses VMs hold taken if they fall inside it.
   */
  moveTo(start: string, size: number, inUse: Iterable<string>): void {
    this.first = toNumber(start);
    this.firstText = toText(this.first);
    this.size = size;
    this.taken.clear();
    for (const mac of inUse) this.claim(mac);
  }

  allocate(): string {
    for (let i = 0; i < this.size; i++) {
      if (!this.taken.has(this.first + i)) {
        this.taken.add(this.first + i);
        return toText(this.first + i);
      }
    }
    throw resourceExhausted(
      `the host's MAC pool (${toText(this.first)}, ${this.size} addresses) is exhausted`,
    );
  }

  /** Marks an address taken if it lies in the pool; returns false if it was taken already. */
  claim(mac: string): boolean {
    const n = toNumber(mac);
    if (n < this.first || n >= this.first + this.size) return true;
    if (this.taken.has(n)) return false;
    this.taken.add(n);
    return true;
  }

  release(mac: string): void {
    this.taken.delete(toNumber(mac));
  }

  get free(): number {
    return this.size - this.taken.size;
  }
}

import type { pb } from '@hyperfarm/api';
import type { SimRng } from '@hyperfarm/raft';

const MIB = 1024 ** 2;

/** The guests the workload creates (each in the engine's catalog, with integration services). */
const GUESTS = ['windows-server-2008-x64', 'windows-server-2003-sp2-x64', 'sles-10-sp1-x64'];

/** A VM configuration as a client sends it: a guest, 512 MiB to 4 GiB, 1 or 2 processors. */
export function randomVmConfig(rng: SimRng, name: string, opts: { disks: boolean }): pb.VmConfig {
  const guest = GUESTS[rng.int(GUESTS.length)]!;
  return {
    name,
    guestOs: guest,
    memoryBytes: [512, 1024, 2048, 4096][rng.int(4)]! * MIB,
    processor: { count: guest.startsWith('sles') ? 1 : 1 + rng.int(2) },
    integrationServices: true,
    disks: opts.disks
      ? [
          {
            controller: 'DISK_CONTROLLER_IDE',
            controllerNumber: 0,
            location: 0,
            path: 'disk0.vhd',
            createType: 'DISK_TYPE_DYNAMIC',
            createSizeBytes: 1024 * MIB,
          },
        ]
      : [],
    workload: {
      cpuDemandPercent: 5 + rng.int(30),
      workingSetBytes: 64 * MIB,
      dirtyPagesPerSecond: 0,
      diskIops: opts.disks ? 1 : 0,
      diskWriteBytes: 4096,
      bootMs: 2_000 + rng.int(8_000),
    },
  };
}

/** What the client believes, from the answers it got: the checks compare the farm with it. */
export interface ClientView {
  /** VMs whose create was acknowledged, and not deleted since by an acknowledged delete. */
  vms: Map<string, { name: string; desired: pb.VmState__Output | undefined; pendingSince: number }>;
  acknowledged: number;
  failed: number;
}

/**
 * Ids in the order they were added, with removal and the k-th id kept in that order, each in
 * O(log n): the workload picks a VM by its place in this order (`at(rng.int(size))`), so an
 * array's splice per delete (linear, 50,000 VMs) is replaced without changing a single pick.
 * A Fenwick tree over the slots counts the ids still there; removed slots are compacted away
 * once they are most of the array.
 */
export class OrderedIds {
  private slots: (string | undefined)[] = [];
  /** Fenwick tree over `slots` (1-based): tree[i] counts the ids in (i - lowbit(i), i]. */
  private tree: number[] = [0];
  private readonly slotOf = new Map<string, number>();

  get size(): number {
    return this.slotOf.size;
  }

  has(id: string): boolean {
    return this.slotOf.has(id);
  }

  /** Adds `id` last (nothing if it is there already). */
  push(id: string): void {
    if (this.slotOf.has(id)) return;
    this.slots.push(id);
    const i = this.slots.length;
    this.slotOf.set(id, i);
    // (i - lowbit(i), i] is this slot and the range before it that tree[i] also covers.
    this.tree.push(1 + this.prefix(i - 1) - this.prefix(i - (i & -i)));
  }

  delete(id: string): void {
    const i = this.slotOf.get(id);
    if (i === undefined) return;
    this.slotOf.delete(id);
    this.slots[i - 1] = undefined;
    for (let k = i; k < this.tree.length; k += k & -k) this.tree[k]!--;
    if (this.slots.length > 1_024 && this.slotOf.size * 2 < this.slots.length) this.compact();
  }

  /** The id at place k (0-based) in the order added, among those still there. */
  at(k: number): string | undefined {
    if (k < 0 || k >= this.slotOf.size) return undefined;
    let pos = 0;
    let left = k + 1;
    for (let step = 1 << Math.floor(Math.log2(this.slots.length)); step > 0; step >>= 1) {
      const next = pos + step;
      if (next < this.tree.length && this.tree[next]! < left) {
        pos = next;
        left -= this.tree[next]!;
      }
    }
    return this.slots[pos];
  }

  private prefix(i: number): number {
    let sum = 0;
    for (let k = i; k > 0; k -= k & -k) sum += this.tree[k]!;
    return sum;
  }

  private compact(): void {
    const ids = this.slots.filter((id): id is string => id !== undefined);
    this.slots = [];
    this.tree = [0];
    this.slotOf.clear();
    for (const id of ids) this.push(id);
  }
}

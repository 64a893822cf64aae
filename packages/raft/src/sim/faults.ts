import type { NodeId } from '../types.js';
import type { NetworkFaults, SimNetwork } from './network.js';
import type { SimRng } from './rng.js';

/** Drop, duplicate and delay rates drawn for a stretch of the run, scaled by `chaos`. */
export function randomNetworkFaults(r: SimRng, chaos: number): NetworkFaults {
  return {
    drop: (chaos * r.int(11)) / 100,
    duplicate: (chaos * r.int(6)) / 100,
    minDelay: 1,
    maxDelay: 1 + r.int(Math.max(1, Math.round(chaos * 15))),
    longDelayChance: chaos * 0.02,
    longDelay: 100,
  };
}

/**
 * Replaces the network's partition with a random one and describes it: healed, two groups
 * (symmetric), one node heard by nobody or hearing nobody (asymmetric), one direction of one
 * link cut (one-way), or a bridge node that reaches two halves that cannot reach each other.
 */
export function randomPartition(r: SimRng, ids: readonly NodeId[], network: SimNetwork): string {
  const kind = r.next();
  network.heal();
  if (kind < 0.3) return 'heal';
  if (kind < 0.55) {
    const shuffled = shuffle(ids, r);
    const cut = r.between(1, shuffled.length - 1);
    const groups = [shuffled.slice(0, cut), shuffled.slice(cut)];
    network.partition(groups);
    return `partition ${JSON.stringify(groups)}`;
  }
  if (kind < 0.7) {
    const node = r.pick(ids);
    const deaf = r.chance(0.5);
    network.isolateOneWay(node, ids, deaf);
    return `${node} ${deaf ? 'hears nobody but is heard' : 'hears everybody but nobody hears it'}`;
  }
  if (kind < 0.85) {
    const a = r.pick(ids);
    const b = r.pick(ids.filter((x) => x !== a));
    network.blockOneWay(a, b);
    return `one-way cut ${a} → ${b}`;
  }
  const shuffled = shuffle(ids, r);
  const bridge = shuffled.pop()!;
  const cut = Math.max(1, Math.floor(shuffled.length / 2));
  const halves = [shuffled.slice(0, cut), shuffled.slice(cut)];
  network.partition(halves);
  return `${bridge} bridges ${JSON.stringify(halves)}`;
}

function shuffle<T>(items: readonly T[], r: SimRng): T[] {
  const a = [...items];
  for (let i = a.length - 1; i > 0; i--) {
    const j = r.int(i + 1);
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

// The arithmetic every NLB member does alike: which bucket a client falls in, how many of the
// 60 buckets each member's load weight earns, and a new bucket map that moves as few buckets as
// it can. Pure functions, so members that see the same inputs reach the same map.

/** Windows NLB splits the client space of each multiple-host port rule into 60 buckets. */
export const BUCKETS = 60;

export type Affinity = 'none' | 'single' | 'network';

/** A 32-bit avalanche (the "lowbias32" finalizer): every input bit moves about half the output bits. */
function mix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * The bucket of a client: a hash of its IP address, and of its port too under affinity None;
 * under affinity Network only the address's class C network (/24) counts, so a client behind a
 * farm of proxies in one /24 stays on one member.
 */
export function bucketOf(affinity: Affinity, clientIp: number, clientPort: number): number {
  const key = affinity === 'network' ? (clientIp & 0xffffff00) >>> 0 : clientIp;
  let h = mix32(key ^ 0x9e3779b9);
  if (affinity === 'none') h = mix32(h ^ Math.imul(clientPort + 1, 0x85ebca6b));
  return h % BUCKETS;
}

/**
 * Buckets each member earns: its share of the total load weight, rounded by largest remainder
 * (ties to the lower priority number). A member of weight 0 gets none; if every weight is 0 no
 * member gets any and the rule's traffic is not served.
 */
export function quotas(weights: ReadonlyMap<number, number>): Map<number, number> {
  const out = new Map<number, number>();
  let total = 0;
  for (const w of weights.values()) total += w;
  if (total <= 0) {
    for (const p of weights.keys()) out.set(p, 0);
    return out;
  }
  const fractions: { p: number; frac: number }[] = [];
  let given = 0;
  for (const [p, w] of weights) {
    const exact = (BUCKETS * w) / total;
    const whole = Math.floor(exact);
    out.set(p, whole);
    given += whole;
    fractions.push({ p, frac: exact - whole });
  }
  fractions.sort((a, b) => b.frac - a.frac || a.p - b.p);
  for (let i = 0; i < BUCKETS - given; i++) {
    const p = fractions[i]!.p;
    out.set(p, out.get(p)! + 1);
  }
  return out;
}

/**
 * The bucket map (owner priority per bucket, 0 for none) for the members and weights given,
 * starting from `base`: a bucket stays with its owner while the owner is still a member and
 * under its quota; the rest go, lowest bucket first, to the member furthest under its quota.
 * Applying it to its own result changes nothing, so members that start from different
 * generations of the same map still agree.
 */
export function rebalance(
  base: readonly number[] | undefined,
  weights: ReadonlyMap<number, number>,
): number[] {
  const quota = quotas(weights);
  const count = new Map<number, number>();
  for (const p of quota.keys()) count.set(p, 0);
  const map = new Array<number>(BUCKETS).fill(0);
  if (base) {
    for (let b = 0; b < BUCKETS; b++) {
      const owner = base[b] ?? 0;
      const q = quota.get(owner);
      if (q !== undefined && count.get(owner)! < q) {
        map[b] = owner;
        count.set(owner, count.get(owner)! + 1);
      }
    }
  }
  const members = [...quota.keys()].sort((a, b) => a - b);
  for (let b = 0; b < BUCKETS; b++) {
    if (map[b] !== 0) continue;
    let best = 0;
    let bestDeficit = 0;
    for (const p of members) {
      const deficit = quota.get(p)! - count.get(p)!;
      if (deficit > bestDeficit) {
        best = p;
        bestDeficit = deficit;
      }
    }
    if (best === 0) break;
    map[b] = best;
    count.set(best, count.get(best)! + 1);
  }
  return map;
}

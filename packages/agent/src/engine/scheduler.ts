/**
 * CPU shares under contention, as Hyper-V's scheduler hands them out: every VM first gets what
 * it asks for up to its reserve, then the rest of the host is shared in proportion to relative
 * weight, never beyond a VM's limit or its demand (water-filling: capacity a capped VM cannot
 * use flows to the others). Units are logical processors (1.0 = one LP fully busy).
 */
export interface CpuClaim {
  id: string;
  /** What the guest would use with no contention. */
  demand: number;
  /** Guaranteed, if demanded. */
  reserve: number;
  /** Never more than this. */
  limit: number;
  /** Relative weight, > 0. */
  weight: number;
}

export function shareCpu(capacity: number, claims: readonly CpuClaim[]): Map<string, number> {
  const uncontended = shareUncontended(capacity, claims);
  if (uncontended) return uncontended;
  const alloc = new Map<string, number>();
  const cap = new Map<string, number>();
  for (const c of claims) cap.set(c.id, Math.max(0, Math.min(c.demand, c.limit)));

  // Reserves first. If even the reserves do not fit (the host admitted too much), scale them.
  const reserved = claims.map((c) => Math.min(c.reserve, cap.get(c.id)!));
  const reservedTotal = reserved.reduce((a, b) => a + b, 0);
  const scale = reservedTotal > capacity ? capacity / reservedTotal : 1;
  claims.forEach((c, i) => alloc.set(c.id, reserved[i]! * scale));
  let remaining = Math.max(0, capacity - reservedTotal * scale);

  // Then weight-proportional water-filling among those that still want more.
  let active = claims.filter((c) => alloc.get(c.id)! < cap.get(c.id)! - 1e-12);
  while (remaining > 1e-12 && active.length > 0) {
    const totalWeight = active.reduce((a, c) => a + c.weight, 0);
    const saturated: CpuClaim[] = [];
    for (const c of active) {
      const offer = (remaining * c.weight) / totalWeight;
      if (alloc.get(c.id)! + offer >= cap.get(c.id)! - 1e-12) saturated.push(c);
    }
    if (saturated.length === 0) {
      for (const c of active) alloc.set(c.id, alloc.get(c.id)! + (remaining * c.weight) / totalWeight);
      remaining = 0;
      break;
    }
    // Fill the saturated ones to their cap and hand what is left to the others next round.
    for (const c of saturated) {
      remaining -= cap.get(c.id)! - alloc.get(c.id)!;
      alloc.set(c.id, cap.get(c.id)!);
    }
    active = active.filter((c) => !saturated.includes(c));
  }
  return alloc;
}

/** How far below the capacity the claims must stay to be shared without water-filling. */
export const UNCONTENDED_MARGIN = 1e-9;

/**
 * The shares when everything asked for fits with room to spare (a host's usual case): each claim
 * gets its cap, what the water-filling below ends with then, without its rounds and maps. A claim
 * whose reserve already reaches its cap keeps the reserve, as there. The margin keeps rounding
 * in those rounds from mattering; undefined when the claims do not fit within it.
 */
function shareUncontended(capacity: number, claims: readonly CpuClaim[]): Map<string, number> | undefined {
  let total = 0;
  for (const c of claims) total += Math.max(0, Math.min(c.demand, c.limit));
  if (!(total <= capacity - UNCONTENDED_MARGIN)) return undefined;
  const alloc = new Map<string, number>();
  for (const c of claims) {
    const cap = Math.max(0, Math.min(c.demand, c.limit));
    const reserved = Math.min(c.reserve, cap);
    alloc.set(c.id, reserved >= cap - 1e-12 ? reserved : cap);
  }
  return alloc;
}

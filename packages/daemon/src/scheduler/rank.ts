/**
 * Scoring, as Nomad's ScoreFit: from the host's free share of memory and of virtual processor
 * capacity once the VM is on it, 10^freeCpu + 10^freeMemory runs from 2 (full) to 20 (empty).
 * Binpack prefers the fullest host that fits (fewer, fuller hosts; whole hosts stay free for big
 * VMs); spread prefers the emptiest (load and failures shared out). Both scores run 0 to 1.
 */
export type Policy = 'binpack' | 'spread';

export function fitScore(
  policy: Policy,
  memoryUsed: number,
  memoryCapacity: number,
  vcpusUsed: number,
  vcpuCapacity: number,
): number {
  const total = 10 ** free(vcpusUsed, vcpuCapacity) + 10 ** free(memoryUsed, memoryCapacity);
  return policy === 'binpack' ? (20 - total) / 18 : (total - 2) / 18;
}

const free = (used: number, cap: number): number => (cap <= 0 ? 0 : Math.min(1, Math.max(0, 1 - used / cap)));

/**
 * The order of candidates: fewer soft anti-affinity classes shared first (a soft class is broken
 * only when nothing else fits), then the higher score, then the host id, so a plan is the same
 * on every run.
 */
export function better(
  a: { conflicts: number; score: number; id: string },
  b: { conflicts: number; score: number; id: string } | undefined,
): boolean {
  if (!b) return true;
  if (a.conflicts !== b.conflicts) return a.conflicts < b.conflicts;
  if (a.score !== b.score) return a.score > b.score;
  return a.id < b.id;
}

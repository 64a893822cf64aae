import { HyperfarmClient } from '../src/index.js';
import type { ProcessFarm } from '../src/farm/process-farm.js';

/** Polls `check` until it returns a value: waiting on a condition, failing with the last error. */
export async function until<T>(
  what: string,
  ms: number,
  check: () => Promise<T | undefined> | T | undefined,
): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The leader's id and address, once every live daemon agrees on one. */
export async function agreedLeader(farm: ProcessFarm): Promise<{ id: string; address: string }> {
  return until('a leader every live daemon agrees on', 30_000, async () => {
    const views = await Promise.all(
      farm.liveDaemons().map(async (id) => {
        const c = new HyperfarmClient({ endpoints: [farm.daemonAddresses.get(id)!], deadlineMs: 1_000 });
        try {
          return await c.call('getClusterStatus', {}, { attemptTimeoutMs: 1_000 });
        } finally {
          c.close();
        }
      }),
    );
    const ids = new Set(views.map((v) => v.leaderId));
    const [id] = ids;
    if (ids.size !== 1 || !id || !farm.liveDaemons().includes(id)) return undefined;
    return { id, address: farm.daemonAddresses.get(id)! };
  });
}

/** A small VM configuration with a quick boot. */
export const vmSpec = (name: string, memoryMiB = 64) => ({
  name,
  processor: { count: 1 },
  memoryBytes: memoryMiB * 1024 * 1024,
  guestOs: 'windows-server-2008-x64',
  integrationServices: true,
  workload: { bootMs: 200 },
});

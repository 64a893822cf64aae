import { type KvCluster, type KvMember } from '../../../packages/raft/src/node/kv-cluster.js';
import { percentile } from './load.js';

const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Kill -9 the leader `kills` times under a steady write load and measure, each time, how long
 * from the SIGKILL until a write is acknowledged by another member (the next committed write).
 * The killed member is restarted and must catch up before the next kill.
 */
export async function measureFailover(
  cluster: KvCluster,
  opts: { kills: number; clients: number; log: (line: string) => void },
): Promise<{ samplesMs: number[]; medianMs: number; maxMs: number }> {
  const acks: Array<{ at: number; by: string }> = [];
  let stop = false;
  let leaderHint: KvMember | undefined;

  const client = async (w: number): Promise<void> => {
    let target: KvMember | undefined;
    for (let i = 0; !stop; i++) {
      const running = cluster.running();
      target = target && running.includes(target) ? target : (leaderHint ?? running[w % running.length]);
      if (!target) {
        await pause(10);
        continue;
      }
      const current = target;
      const next = running[(running.indexOf(current) + 1) % running.length];
      try {
        const res = await cluster.call(current, 'PUT', `/kv/f${w}-${i}`, 'x'.repeat(256), 3_000);
        if (res.status === 200) {
          acks.push({ at: performance.now(), by: current.id });
          continue;
        }
        target = running.find((m) => m.id === res.body.leader) ?? next;
      } catch {
        target = next;
      }
      await pause(10);
    }
  };
  const clients = Array.from({ length: opts.clients }, (_, w) => client(w));

  const samples: number[] = [];
  try {
    for (let k = 0; k < opts.kills; k++) {
      const leader = await cluster.leader(30_000);
      leaderHint = leader;
      // A steady state first: writes flowing through this leader.
      const since = performance.now();
      while (!acks.some((a) => a.at > since && a.by === leader.id)) await pause(10);
      await pause(300);
      const killedAt = performance.now();
      await cluster.kill(leader);
      leaderHint = undefined;
      let next: { at: number; by: string } | undefined;
      while (!(next = acks.find((a) => a.at > killedAt && a.by !== leader.id))) await pause(2);
      const ms = next.at - killedAt;
      samples.push(ms);
      opts.log(
        `  kill ${k + 1}/${opts.kills}: ${leader.id} killed, next write committed via ${next.by} after ${ms.toFixed(0)} ms`,
      );
      await cluster.launch(leader);
      const newLeader = await cluster.leader(30_000);
      const target = (await cluster.call(newLeader, 'GET', '/status')).body.commit as number;
      for (;;) {
        const st = await cluster.call(leader, 'GET', '/status', undefined, 1_000).catch(() => undefined);
        if (st && (st.body.applied as number) >= target) break;
        await pause(20);
      }
    }
  } finally {
    stop = true;
    await Promise.all(clients);
  }
  const sorted = [...samples].sort((a, b) => a - b);
  return { samplesMs: samples, medianMs: percentile(sorted, 50), maxMs: sorted[sorted.length - 1] ?? NaN };
}

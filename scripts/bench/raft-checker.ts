/**
 * How fast the linearizability checker decides histories of growing size and concurrency.
 *
 *   node --import tsx scripts/bench/raft-checker.ts
 *
 * Each history comes from clients running against one atomic key-value store: every operation
 * takes effect at one instant between its call and its return (so the history is linearizable),
 * and a share of the writes are abandoned (unknown outcome). The last line is one JSON object.
 */
import {
  checkLinearizable,
  kvModel,
  type KvInput,
  type KvOutput,
  type Operation,
  UNKNOWN,
} from '../../packages/raft/src/checker/index.js';
import { SimRng } from '../../packages/raft/src/sim/rng.js';

interface Shape {
  ops: number;
  clients: number;
  keys: number;
  unknownShare: number;
}

function history(shape: Shape, seed: number): Operation<KvInput, KvOutput>[] {
  const rng = new SimRng(seed);
  const store = new Map<string, string>();
  const busyUntil = new Array<number>(shape.clients).fill(0);
  const ops: Operation<KvInput, KvOutput>[] = [];
  let t = 0;
  for (let i = 0; i < shape.ops; i++) {
    t += rng.between(1, 3);
    // A free client calls a bit before t; the effect is at t; the return comes a bit after.
    const client = rng.int(shape.clients);
    const call = Math.max(busyUntil[client]! + 1, t - rng.between(0, 20));
    if (call > t) {
      t = call;
    }
    const ret = t + rng.between(0, 20);
    busyUntil[client] = ret;
    const key = `k${rng.int(shape.keys)}`;
    if (rng.chance(0.5)) {
      const value = `v${i}`;
      store.set(key, value);
      const unknown = rng.chance(shape.unknownShare);
      ops.push({
        client,
        input: { op: 'put', key, value },
        call,
        return: unknown ? Infinity : ret,
        output: unknown ? UNKNOWN : null,
      });
      if (unknown) busyUntil[client] = t; // the client gave up and moved on
    } else {
      ops.push({ client, input: { op: 'get', key }, call, return: ret, output: store.get(key) ?? null });
    }
  }
  return ops;
}

const shapes: Shape[] = [
  { ops: 1_000, clients: 5, keys: 5, unknownShare: 0.02 },
  { ops: 10_000, clients: 5, keys: 10, unknownShare: 0.02 },
  { ops: 10_000, clients: 20, keys: 10, unknownShare: 0.02 },
  { ops: 2_000, clients: 10, keys: 1, unknownShare: 0.05 },
];

const results: Record<string, number | string> = {};
for (const shape of shapes) {
  const name = `ops${shape.ops}_clients${shape.clients}_keys${shape.keys}`;
  const runs = 5;
  let total = 0;
  let steps = 0;
  let verdict = 'ok';
  for (let r = 0; r < runs; r++) {
    const h = history(shape, 1000 + r);
    const t0 = performance.now();
    const res = checkLinearizable(kvModel, h, { maxSteps: 50_000_000 });
    total += performance.now() - t0;
    steps += res.steps;
    if (res.verdict !== 'ok') verdict = res.verdict;
  }
  const ms = total / runs;
  console.log(
    `${name}: ${ms.toFixed(1)} ms per history, ${Math.round(shape.ops / (ms / 1000))} ops/s, ${Math.round(steps / runs)} search steps, verdict ${verdict}`,
  );
  results[`${name}_ms`] = Math.round(ms * 10) / 10;
  if (verdict !== 'ok') results[`${name}_verdict`] = verdict;
}
console.log(JSON.stringify({ bench: 'raft-checker', ...results }));

/**
 * Benchmark of the sans-I/O core alone: a 3-node cluster in one process, messages passed in
 * memory, storage in memory, no fsync. It measures the CPU cost of the protocol, the ceiling the
 * real node (LevelDB, gRPC) can approach.
 *
 *   node --import tsx scripts/bench/raft-core.ts [--seconds 3]
 *
 * Prints figures, then one JSON object as its last line.
 */
import os from 'node:os';
import { type Message, Role } from '../../packages/raft/src/types.js';
import { MemoryStorage } from '../../packages/raft/src/core/memory-storage.js';
import { RawNode } from '../../packages/raft/src/core/raw-node.js';
import { SeededRng } from '../../packages/raft/src/core/rng.js';

const secondsArg = process.argv.indexOf('--seconds');
const SECONDS = secondsArg > 0 ? Number(process.argv[secondsArg + 1]) : 3;
const VALUE = new Uint8Array(256).fill(7);

interface BenchNode {
  raw: RawNode;
  storage: MemoryStorage;
  applied: number;
}

function cluster(ids: string[]): Map<string, BenchNode> {
  const nodes = new Map<string, BenchNode>();
  ids.forEach((id, i) => {
    const storage = MemoryStorage.bootstrap({ voters: ids, learners: [] });
    nodes.set(id, { raw: new RawNode({ id, storage, rng: new SeededRng(i + 1) }), storage, applied: 0 });
  });
  return nodes;
}

/** Runs Readies and delivers messages until quiet; returns the messages delivered. */
function pump(nodes: Map<string, BenchNode>, compactEvery: number): number {
  let delivered = 0;
  let queue: Message[] = [];
  for (;;) {
    for (const n of nodes.values()) {
      while (n.raw.hasReady()) {
        const rd = n.raw.ready();
        if (rd.snapshot) n.storage.applySnapshot(rd.snapshot);
        n.storage.append(rd.entries);
        if (rd.hardState) n.storage.setHardState(rd.hardState);
        for (const m of rd.messages) queue.push(m);
        n.applied += rd.committedEntries.length;
        n.raw.advance(rd);
        if (n.applied % 4096 !== 0 && n.storage.lastIndex() - n.storage.firstIndex() < 2 * compactEvery)
          continue;
        const st = n.raw.status();
        if (st.applied - n.storage.firstIndex() > compactEvery) {
          n.storage.createSnapshot(st.applied, st.conf, new Uint8Array(0));
          n.storage.compact(st.applied - 1000);
        }
      }
    }
    if (queue.length === 0) return delivered;
    const batch = queue;
    queue = [];
    for (const m of batch) {
      nodes.get(m.to)!.raw.step(m);
      delivered++;
    }
  }
}

function leaderOf(nodes: Map<string, BenchNode>): BenchNode {
  for (const n of nodes.values()) if (n.raw.status().role === Role.Leader) return n;
  throw new Error('no leader');
}

function run(concurrency: number): { entriesPerS: number; msgsPerEntry: number; usPerRound: number } {
  const nodes = cluster(['a', 'b', 'c']);
  nodes.get('a')!.raw.campaign();
  pump(nodes, 50_000);
  const leader = leaderOf(nodes);
  let entries = 0;
  let msgs = 0;
  let rounds = 0;
  const start = process.hrtime.bigint();
  const deadline = start + BigInt(SECONDS * 1e9);
  while (process.hrtime.bigint() < deadline) {
    for (let i = 0; i < 100; i++) {
      // One round: `concurrency` clients each propose, then the cluster settles.
      for (let c = 0; c < concurrency; c++) leader.raw.propose(VALUE);
      msgs += pump(nodes, 50_000);
      entries += concurrency;
      rounds++;
    }
  }
  const secs = Number(process.hrtime.bigint() - start) / 1e9;
  const slowest = Math.min(...[...nodes.values()].map((n) => n.applied));
  if (slowest < entries) throw new Error(`only ${slowest} of ${entries} entries applied everywhere`);
  return { entriesPerS: entries / secs, msgsPerEntry: msgs / entries, usPerRound: (secs / rounds) * 1e6 };
}

function electionTicks(seeds: number): { median: number; max: number } {
  const ticks: number[] = [];
  for (let seed = 1; seed <= seeds; seed++) {
    const ids = ['a', 'b', 'c'];
    const nodes = new Map<string, BenchNode>();
    ids.forEach((id, i) => {
      const storage = MemoryStorage.bootstrap({ voters: ids, learners: [] });
      nodes.set(id, {
        raw: new RawNode({ id, storage, rng: new SeededRng(seed * 10 + i) }),
        storage,
        applied: 0,
      });
    });
    let t = 0;
    for (; t < 1000; t++) {
      if ([...nodes.values()].some((n) => n.raw.status().role === Role.Leader)) break;
      for (const n of nodes.values()) n.raw.tick();
      pump(nodes, 50_000);
    }
    ticks.push(t);
  }
  ticks.sort((a, b) => a - b);
  return { median: ticks[Math.floor(ticks.length / 2)]!, max: ticks[ticks.length - 1]! };
}

const one = run(1);
const many = run(64);
const election = electionTicks(200);
console.log(
  `machine: ${os.cpus().length} cores, ${os.cpus()[0]?.model ?? 'unknown cpu'}, node ${process.version}`,
);
console.log(
  `1 client:   ${one.entriesPerS.toFixed(0)} entries/s committed on 3 nodes (${one.usPerRound.toFixed(1)} µs per round trip, ${one.msgsPerEntry.toFixed(1)} msgs/entry)`,
);
console.log(
  `64 clients: ${many.entriesPerS.toFixed(0)} entries/s committed on 3 nodes (${many.msgsPerEntry.toFixed(2)} msgs/entry)`,
);
console.log(
  `first election from a cold start: median ${election.median} ticks, max ${election.max} ticks (electionTick 10)`,
);
console.log(
  JSON.stringify({
    bench: 'raft-core',
    seconds: SECONDS,
    cores: os.cpus().length,
    entries_per_s_1: Math.round(one.entriesPerS),
    entries_per_s_64: Math.round(many.entriesPerS),
    us_per_commit_1: Number(one.usPerRound.toFixed(1)),
    msgs_per_entry_64: Number(many.msgsPerEntry.toFixed(2)),
    election_ticks_median: election.median,
    election_ticks_max: election.max,
  }),
);

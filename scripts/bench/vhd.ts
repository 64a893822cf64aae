/**
 * VHD throughput against raw file I/O of the same pattern, in the same run.
 *
 *   node --import tsx scripts/bench/vhd.ts [--size 64M] [--rounds 3] [--dir /tmp]
 *
 * Sequential and random 4 KiB writes and reads, for fixed and dynamic VHDs and a plain
 * file; then merging a fully written differencing disk into its parent, and one into its
 * child (re-linking the child to the base, as deleting a snapshot does). Writes end with
 * one flush (fsync), as a guest's flush would. Every round uses fresh files (so dynamic
 * disks pay for allocating their blocks). Shared VMs are noisy: the three targets run
 * interleaved in small chunks, each round is repeated `--rounds` times, and the median is
 * reported. Prints a table, then one JSON line.
 */
import { promises as fsp } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { join } from 'node:path';
import { VhdDisk, createVhd, mergeIntoChildVhd, mergeVhd, parseSize } from '@hyperfarm/vhd';

const IO = 4096;

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}

const size = parseSize(arg('--size', '64M'), '--size');
const rounds = Number(arg('--rounds', '3'));
if (!Number.isInteger(rounds) || rounds < 1) throw new Error('--rounds: must be a positive integer');
if (size % IO !== 0) throw new Error(`--size: must be a multiple of ${IO}`);
const dir = await fsp.mkdtemp(join(arg('--dir', tmpdir()), 'vhd-bench-'));

/** The same seeded 4 KiB-aligned offsets for every target. */
function randomOffsets(count: number, seed: number): number[] {
  let a = seed >>> 0;
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out.push((((t ^ (t >>> 14)) >>> 0) % (size / IO)) * IO);
  }
  return out;
}

interface Target {
  write(offset: number, data: Buffer): Promise<void>;
  read(offset: number, length: number): Promise<Buffer>;
  flush(): Promise<void>;
  close(): Promise<void>;
}

async function rawTarget(path: string): Promise<Target> {
  const h = await fsp.open(path, 'w+');
  await h.truncate(size);
  return {
    write: async (o, d) => void (await h.write(d, 0, d.length, o)),
    read: async (o, l) => {
      const b = Buffer.alloc(l);
      await h.read(b, 0, l, o);
      return b;
    },
    flush: () => h.sync(),
    close: () => h.close(),
  };
}

async function vhdTarget(path: string, type: 'fixed' | 'dynamic'): Promise<Target> {
  const d = await createVhd(path, { type, size, exactSize: true });
  return d;
}

const MB = 1024 * 1024;
const mbps = (bytes: number, ms: number) => bytes / MB / (ms / 1000);

async function timed(fn: () => Promise<void>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

/**
 * One round of a pattern on fresh raw, fixed and dynamic targets, interleaved in chunks
 * of 256 I/Os (rotating who goes first) so that a noisy neighbour slows all three alike.
 */
async function round(pattern: 'seq' | 'rand', offsets: number[], turn: number) {
  const targets = {
    raw: await rawTarget(join(dir, `raw-${pattern}.img`)),
    fixed: await vhdTarget(join(dir, `fixed-${pattern}.vhd`), 'fixed'),
    dynamic: await vhdTarget(join(dir, `dynamic-${pattern}.vhd`), 'dynamic'),
  };
  const ms = { raw: { write: 0, read: 0 }, fixed: { write: 0, read: 0 }, dynamic: { write: 0, read: 0 } };
  const data = Buffer.alloc(IO, 0x5a);
  const CHUNK = 256;
  for (const phase of ['write', 'read'] as const) {
    for (let c = 0; c < offsets.length; c += CHUNK) {
      const chunk = offsets.slice(c, c + CHUNK);
      for (let k = 0; k < KINDS.length; k++) {
        const kind = KINDS[(k + turn + c / CHUNK) % KINDS.length]!;
        const t = targets[kind];
        ms[kind][phase] += await timed(async () => {
          if (phase === 'write') for (const o of chunk) await t.write(o, data);
          else for (const o of chunk) await t.read(o, IO);
        });
      }
    }
    if (phase === 'write')
      for (const kind of KINDS) ms[kind].write += await timed(() => targets[kind].flush());
  }
  const bytes = offsets.length * IO;
  for (const kind of KINDS) {
    await targets[kind].close();
    (samples[`${kind}_${pattern}`] ??= []).push({
      write: mbps(bytes, ms[kind].write),
      read: mbps(bytes, ms[kind].read),
    });
  }
  await fsp.rm(dir, { recursive: true, force: true });
  await fsp.mkdir(dir);
}

const KINDS = ['raw', 'fixed', 'dynamic'] as const;
const seq = Array.from({ length: size / IO }, (_, i) => i * IO);
const rand = randomOffsets(size / IO / 4, 42);
const samples: Record<string, { write: number; read: number }[]> = {};

// Warm-up (not measured): JIT, libuv's thread pool.
await round('rand', randomOffsets(1024, 7), 0);
for (const key of Object.keys(samples)) delete samples[key];

for (let r = 0; r < rounds; r++) {
  await round('seq', seq, r);
  await round('rand', rand, r);
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const results: Record<string, { write: number; read: number }> = {};
for (const kind of KINDS) {
  for (const pattern of ['seq', 'rand']) {
    const s = samples[`${kind}_${pattern}`]!;
    results[`${kind}_${pattern}`] = {
      write: median(s.map((x) => x.write)),
      read: median(s.map((x) => x.read)),
    };
  }
}

// Merge: a differencing disk written all over, folded into its dynamic parent.
const base = join(dir, 'base.vhd');
const child = join(dir, 'child.vhd');
await (await createVhd(base, { type: 'dynamic', size, exactSize: true })).close();
const c = await createVhd(child, { type: 'differencing', parentPath: base });
const chunk = Buffer.alloc(MB, 0xa5);
for (let o = 0; o < size; o += MB) await c.write(o, chunk.subarray(0, Math.min(MB, size - o)));
await c.close();
let merged = 0;
const mergeMs = await timed(async () => {
  merged = (await mergeVhd(child)).bytesMerged;
});
const check = await VhdDisk.open(base, { readOnly: true });
if (!(await check.read(size - IO, IO)).equals(chunk.subarray(0, IO)))
  throw new Error('merge produced wrong data');
await check.close();

// Merge into the child (how a snapshot is deleted): a fully written snapshot disk folded
// into the empty disk above it, which is then re-linked to the base.
const snap = join(dir, 'snap.vhd');
const now = join(dir, 'now.vhd');
await (await createVhd(join(dir, 'base2.vhd'), { type: 'dynamic', size, exactSize: true })).close();
const s = await createVhd(snap, { type: 'differencing', parentPath: join(dir, 'base2.vhd') });
for (let o = 0; o < size; o += MB) await s.write(o, chunk.subarray(0, Math.min(MB, size - o)));
await s.close();
await (await createVhd(now, { type: 'differencing', parentPath: snap })).close();
let mergedIntoChild = 0;
const intoChildMs = await timed(async () => {
  mergedIntoChild = (await mergeIntoChildVhd(now)).bytesMerged;
});
const checkChild = await VhdDisk.open(now, { readOnly: true });
if (
  checkChild.parent?.path !== join(dir, 'base2.vhd') ||
  !(await checkChild.read(size - IO, IO)).equals(chunk.subarray(0, IO))
)
  throw new Error('merge into the child produced the wrong chain');
await checkChild.close();
await fsp.rm(dir, { recursive: true, force: true });

const row = (name: string, r: { write: number; read: number }) =>
  `${name.padEnd(14)} write ${r.write.toFixed(1).padStart(8)} MB/s   read ${r.read.toFixed(1).padStart(8)} MB/s`;
console.log(
  `vhd bench: ${size / MB} MiB, 4 KiB I/O, median of ${rounds} rounds, ${cpus().length} cores, ${new Date().toISOString()}`,
);
for (const [k, v] of Object.entries(results)) console.log(row(k, v));
console.log(`merge          ${mbps(merged, mergeMs).toFixed(1)} MB/s (${merged / MB} MiB)`);
console.log(
  `merge->child   ${mbps(mergedIntoChild, intoChildMs).toFixed(1)} MB/s (${mergedIntoChild / MB} MiB)`,
);

const ratio = (a: number, b: number) => Number((a / b).toFixed(3));
const r = results as Record<string, { write: number; read: number }>;
const summary = {
  bench: 'vhd',
  size_bytes: size,
  rounds,
  io_bytes: IO,
  // The headline ratios are for dynamic disks, the engine's default; fixed ones follow.
  seq_write_ratio: ratio(r.dynamic_seq!.write, r.raw_seq!.write),
  seq_read_ratio: ratio(r.dynamic_seq!.read, r.raw_seq!.read),
  rand_write_ratio: ratio(r.dynamic_rand!.write, r.raw_rand!.write),
  rand_read_ratio: ratio(r.dynamic_rand!.read, r.raw_rand!.read),
  fixed_seq_write_ratio: ratio(r.fixed_seq!.write, r.raw_seq!.write),
  fixed_seq_read_ratio: ratio(r.fixed_seq!.read, r.raw_seq!.read),
  fixed_rand_write_ratio: ratio(r.fixed_rand!.write, r.raw_rand!.write),
  merge_mb_s: Number(mbps(merged, mergeMs).toFixed(1)),
  merge_into_child_mb_s: Number(mbps(mergedIntoChild, intoChildMs).toFixed(1)),
  mb_s: Object.fromEntries(
    Object.entries(results).map(([k, v]) => [
      k,
      { write: Number(v.write.toFixed(1)), read: Number(v.read.toFixed(1)) },
    ]),
  ),
};
console.log(JSON.stringify(summary));

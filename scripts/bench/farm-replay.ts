/**
 * What a restarted daemon pays to get its state back, by its log or by its snapshot: the farm
 * simulator's large profile runs to full (and on, with churn and faults, for `--hours`), every
 * entry the daemons applied is kept, and then, in this process alone, the CPU time of applying
 * the log from the start into an empty state machine (the fill's entries and the ones after it
 * apart), and of encoding and restoring a snapshot of the state it built (at once, as the
 * simulator does). Figures per entry and per byte: the daemon's snapshot policy weighs the log
 * since the last snapshot against that snapshot (docs/daemon.md, "When a snapshot is taken").
 *
 *   npm run bench:farm-replay -- [--hosts 1000] [--vms 50000] [--hours 0.3] [--seed 1]
 *     [--save FILE | --load FILE] [--by-type]
 *
 * `--save` keeps the log (FILE.json and FILE.bin) for `--load`, which measures it again without
 * the simulation; `--by-type` times each entry, by its commands' types (the fill's and after).
 *
 * The last line is one JSON object.
 */
// The simulator's own (built) daemon package, so that the entries it applies are the ones seen.
import { readFileSync, writeFileSync } from 'node:fs';
import { FarmStateMachine } from '@hyperfarm/daemon';
import { LARGE, runFarm } from '../../packages/sim/src/index.js';

const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const HOSTS = arg('hosts', 1000);
const VMS = arg('vms', 50_000);
const HOURS = arg('hours', 0.3);
const SEED = arg('seed', 1);

const saveTo = process.argv.includes('--save') ? process.argv[process.argv.indexOf('--save') + 1] : undefined;
const loadFrom = process.argv.includes('--load')
  ? process.argv[process.argv.indexOf('--load') + 1]
  : undefined;

// Every committed entry, once (the three daemons apply the same ones; a restarted one again).
const log = new Map<number, Uint8Array>();
let filledAt = 0;
let violations = 0;
if (loadFrom) {
  const meta = JSON.parse(readFileSync(`${loadFrom}.json`, 'utf8')) as {
    filledAt: number;
    entries: number[][];
  };
  const bin = readFileSync(`${loadFrom}.bin`);
  let at = 0;
  for (const [index, length] of meta.entries) log.set(index!, bin.subarray(at, (at += length!)));
  filledAt = meta.filledAt;
} else {
  const apply = FarmStateMachine.prototype.apply;
  FarmStateMachine.prototype.apply = function (this: FarmStateMachine, data, index, awaited) {
    if (!log.has(index)) log.set(index, data);
    return apply.call(this, data, index, awaited);
  };
  const run = await runFarm({
    ...LARGE,
    seed: SEED,
    hosts: HOSTS,
    vms: VMS,
    chaosMs: HOURS * 3_600_000,
    settleMs: 60_000,
    onFilled: () => (filledAt = lastIndex()),
  });
  FarmStateMachine.prototype.apply = apply;
  violations = run.violations.length;
}
function lastIndex(): number {
  return [...log.keys()].reduce((m, i) => Math.max(m, i), 0);
}
if (filledAt === 0) throw new Error(`the farm did not fill to ${VMS} VMs in ${HOURS} h: raise --hours`);
const last = lastIndex();
// The membership's entries (the founding configuration) are not the state machine's.
const indexes = [...log.keys()].sort((a, b) => a - b);
if (saveTo) {
  const entries = indexes.map((i) => [i, log.get(i)!.length]);
  writeFileSync(`${saveTo}.json`, JSON.stringify({ filledAt, entries }));
  writeFileSync(`${saveTo}.bin`, Buffer.concat(indexes.map((i) => log.get(i)!)));
}

const gc = (globalThis as { gc?: () => void }).gc;
/** CPU seconds of `work`, after a full collection (so it starts without another's garbage). */
function cpu<T>(work: () => T): { value: T; s: number } {
  gc?.();
  const c0 = process.cpuUsage();
  const value = work();
  const c = process.cpuUsage(c0);
  return { value, s: (c.user + c.system) / 1e6 };
}

/** CPU microseconds by the entry's command types, for the fill's entries and those after it. */
type ByType = Map<string, { n: number; us: number; bytes: number }>;
const fillByType: ByType = new Map();
const byType: ByType = new Map();
const typesOf = (data: Uint8Array): string => {
  try {
    const e = JSON.parse(new TextDecoder().decode(data)) as { cmds?: { type: string }[] };
    return [...new Set((e.cmds ?? []).map((c) => c.type))].sort().join('+') || '(empty)';
  } catch {
    return '(not json)';
  }
};

const machine = new FarmStateMachine();
const replay = (from: number, to: number, timed?: ByType) => {
  let bytes = 0;
  for (const i of indexes) {
    if (i < from || i > to) continue;
    const data = log.get(i)!;
    bytes += data.length;
    if (!timed) {
      machine.apply(data, i, false);
      continue;
    }
    const c0 = process.cpuUsage();
    machine.apply(data, i, false);
    const c = process.cpuUsage(c0);
    const t = typesOf(data);
    const row = timed.get(t) ?? { n: 0, us: 0, bytes: 0 };
    row.n++;
    row.us += c.user + c.system;
    row.bytes += data.length;
    timed.set(t, row);
  }
  return bytes;
};
const timed = process.argv.includes('--by-type');
const fill = cpu(() => replay(1, filledAt, timed ? fillByType : undefined));
const after = cpu(() => replay(filledAt + 1, last, timed ? byType : undefined));
// At once, as the simulator's daemons do (no pause given).
const snap = cpu(() => machine.snapshot() as Uint8Array);
const restore = cpu(() => new FarmStateMachine().restore(snap.value));

const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;
const us = (s: number, n: number) => round((s * 1e6) / n);
const mib = (b: number) => round(b / 2 ** 20);
const fillEntries = indexes.filter((i) => i <= filledAt).length;
const afterEntries = indexes.length - fillEntries;
console.log(
  `farm: ${HOSTS} hosts, ${VMS} VMs, full at index ${filledAt}, ${last} entries by the end ` +
    `(${violations} violations)`,
);
for (const [title, rows] of [
  ['the fill', fillByType],
  ['after it', byType],
] as const) {
  if (rows.size > 0) console.log(`by type, ${title}:`);
  for (const [t, r] of [...rows].sort((a, b) => b[1].us - a[1].us).slice(0, 20))
    console.log(
      `  ${t}: ${r.n} entries, ${Math.round(r.us / 1000)} ms, ${Math.round(r.us / r.n)} us an entry, ${Math.round(r.bytes / r.n)} B`,
    );
}
console.log(
  `replay of the fill: ${fillEntries} entries, ${mib(fill.value)} MiB, ${round(fill.s)} s of CPU ` +
    `(${us(fill.s, fillEntries)} us an entry, ${round((fill.s * 1e9) / fill.value)} ns a byte)`,
);
console.log(
  `replay after it: ${afterEntries} entries, ${mib(after.value)} MiB, ${round(after.s)} s ` +
    `(${afterEntries > 0 ? us(after.s, afterEntries) : 0} us an entry, ` +
    `${after.value > 0 ? round((after.s * 1e9) / after.value) : 0} ns a byte)`,
);
console.log(
  `snapshot: ${mib(snap.value.length)} MiB, encode ${round(snap.s)} s ` +
    `(${round((snap.s * 1e9) / snap.value.length)} ns a byte), restore ${round(restore.s)} s ` +
    `(${round((restore.s * 1e9) / snap.value.length)} ns a byte)`,
);
console.log(
  JSON.stringify({
    hosts: HOSTS,
    vms: VMS,
    fill_entries: fillEntries,
    fill_log_mib: mib(fill.value),
    fill_replay_s: round(fill.s),
    after_entries: afterEntries,
    after_log_mib: mib(after.value),
    after_replay_s: round(after.s),
    snapshot_mib: mib(snap.value.length),
    encode_s: round(snap.s),
    restore_s: round(restore.s),
    violations,
  }),
);

/**
 * The farm state machine's Raft snapshot at scale: its size, and how long encoding and restoring
 * it hold the daemon's event loop, at once and in slices (the daemon's way).
 *
 *   npm run bench:farm-snapshot [-- --hosts 1000] [--vms 50000]
 *
 * The farm is built through real commands (hosts registered, VMs created, placed and reported
 * Running). The last line is one JSON object.
 */
import { FarmStateMachine } from '../../packages/daemon/src/fsm/index.js';
import { decodeSnapshot, encodeSnapshot } from '../../packages/daemon/src/fsm/snapshot.js';
import { FarmBuilder } from '../../packages/daemon/test/fsm/build.js';

const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const HOSTS = arg('hosts', 1000);
const VMS = arg('vms', 50_000);

const machine = new FarmStateMachine();
const b = new FarmBuilder(machine.state);
for (let h = 0; h < HOSTS; h++) b.host({ id: `h${h}`, memGiB: 512 });
for (let i = 0; i < VMS; i++)
  b.vm(`vm-${i}`, { name: `vm-${i}`, memMiB: 256 }, `h${i % HOSTS}`, { start: true }).report(
    `vm-${i}`,
    'RUNNING',
  );

/** Runs `work`, timing the longest stretch between two of its pauses (each a macrotask turn). */
async function sliced<T>(
  work: (pause: () => Promise<void>) => T | Promise<T>,
): Promise<{ value: T; ms: number; longestMs: number }> {
  let last = performance.now();
  let longest = 0;
  const start = last;
  const pause = (): Promise<void> => {
    const now = performance.now();
    longest = Math.max(longest, now - last);
    return new Promise<void>((resolve) => setImmediate(() => ((last = performance.now()), resolve())));
  };
  const value = await work(pause);
  longest = Math.max(longest, performance.now() - last);
  return { value, ms: performance.now() - start, longestMs: longest };
}

const round = (n: number): number => Math.round(n * 10) / 10;
let t = performance.now();
const bytes = encodeSnapshot(machine.state);
const encodeMs = performance.now() - t;
t = performance.now();
decodeSnapshot(bytes);
const decodeMs = performance.now() - t;
const enc = await sliced((pause) => {
  const paced = new FarmStateMachine({ pause });
  paced.state = machine.state;
  return paced.snapshot();
});
// A replica's restore: the machine given the daemon's pause, as the daemon builds it.
const dec = await sliced((pause) => new FarmStateMachine({ pause }).restore(bytes));

const mib = bytes.byteLength / 2 ** 20;
console.log(`farm: ${HOSTS} hosts, ${VMS} VMs Running; snapshot ${mib.toFixed(1)} MiB`);
console.log(
  `encode at once ${round(encodeMs)} ms; in slices ${round(enc.ms)} ms, longest slice ${round(enc.longestMs)} ms`,
);
console.log(
  `restore at once ${round(decodeMs)} ms; in slices ${round(dec.ms)} ms, longest slice ${round(dec.longestMs)} ms`,
);
console.log(
  JSON.stringify({
    hosts: HOSTS,
    vms: VMS,
    snapshot_mib: round(mib),
    encode_ms: round(encodeMs),
    encode_longest_slice_ms: round(enc.longestMs),
    restore_ms: round(decodeMs),
    restore_longest_slice_ms: round(dec.longestMs),
  }),
);

import type { CommandResult } from './command.js';
import { EventWindow } from './events.js';
import type {
  CheckpointRecord,
  FarmEvent,
  GuestOs,
  HostRecord,
  MigrationRecord,
  NlbClusterRecord,
  OperationRecord,
  SwitchRecord,
  VmRecord,
} from './model.js';
import { DEFAULT_HA_SETTINGS, type HaSettings } from './settings.js';
import { DEFAULT_SETTINGS, emptyState, reindexSteps, type FarmSettings, type FarmState } from './state.js';

/**
 * The farm state as snapshot bytes and back: the truth only (the indices are rebuilt), with the
 * event window and the request ids, so a restored replica resumes Watch and dedupes retries
 * exactly as the one that wrote it. Versioned: a daemon reads every older format.
 *
 * Format 2 is JSON lines: a header, then each record list as lines of up to `perLine` records
 * (`["vms",[...]]`). A line is a unit of work both ways, so a daemon encodes and decodes a large
 * farm's snapshot (70 MiB at 50,000 VMs) a line at a time with its event loop served between
 * lines. Format 1 was one JSON document (the lists of SnapshotV1 below, whole).
 */

const SNAPSHOT_FORMAT = 2;
const PER_LINE = 1_000;

interface Header {
  format: 2;
  revision: number;
  settings: FarmSettings;
  ha: HaSettings;
  eventsFloor: number;
}

/** The record lists of a snapshot; each format-2 line holds a slice of one of them. */
interface Lists {
  hosts: HostRecord[];
  guests: GuestOs[];
  vms: VmRecord[];
  checkpoints: CheckpointRecord[];
  operations: OperationRecord[];
  migrations: MigrationRecord[];
  switches: SwitchRecord[];
  nlbClusters: NlbClusterRecord[];
  events: FarmEvent[];
  /** Each request's result, encoded (kept unencoded in the state until a snapshot). */
  requests: [string, CommandResult | string][];
  failovers: [string, number[]][];
}

/** Format 1, still read: one document (lists added later are absent from older ones). */
interface SnapshotV1
  extends
    Omit<Lists, 'events' | 'migrations' | 'nlbClusters' | 'failovers'>,
    Partial<Pick<Lists, 'migrations' | 'nlbClusters' | 'failovers'>> {
  format: 1;
  revision: number;
  settings: FarmSettings;
  events: { floor: number; list: FarmEvent[] };
  ha?: HaSettings;
}

/**
 * What a snapshot holds, as the state is now. Records are replaced when they change, never
 * edited in place, so these references keep this moment's state while the state moves on.
 */
function capture(s: FarmState): { header: Header; lists: Lists } {
  return {
    header: {
      format: SNAPSHOT_FORMAT,
      revision: s.revision,
      settings: s.settings,
      ha: s.ha,
      eventsFloor: s.events.oldestResumable,
    },
    lists: {
      hosts: [...s.hosts.values()],
      guests: [...s.guests.values()],
      vms: [...s.vms.values()],
      checkpoints: [...s.checkpoints.values()],
      operations: [...s.operations.values()],
      migrations: [...s.migrations.values()],
      switches: [...s.switches.values()],
      nlbClusters: [...s.nlbClusters.values()],
      events: s.events.all(),
      requests: [...s.requests],
      failovers: [...s.failovers],
    },
  };
}

function* encodedLines(s: FarmState, perLine: number): Generator<Buffer> {
  const { header, lists } = capture(s);
  yield Buffer.from(JSON.stringify(header));
  for (const [name, list] of Object.entries(lists) as [keyof Lists, unknown[]][])
    for (let i = 0; i < list.length; i += perLine) {
      const slice = list.slice(i, i + perLine);
      // Results are kept as their commands returned them: encoded here, as they always were.
      if (name === 'requests')
        for (const [k, entry] of (slice as [string, CommandResult | string][]).entries())
          if (typeof entry[1] !== 'string') slice[k] = [entry[0], JSON.stringify(entry[1])];
      yield Buffer.from('\n' + JSON.stringify([name, slice]));
    }
}

export function encodeSnapshot(s: FarmState, perLine = PER_LINE): Uint8Array {
  return Buffer.concat([...encodedLines(s, perLine)]);
}

/**
 * The same bytes as encodeSnapshot, but only the capture happens at the call: the lines are
 * encoded one at a time with `pause()` between them, so that a large farm's snapshot does not
 * stall the daemon's event loop.
 */
export async function encodeSnapshotInSlices(
  s: FarmState,
  pause: () => Promise<void>,
  perLine = PER_LINE,
): Promise<Uint8Array> {
  const parts: Buffer[] = [];
  for (const line of encodedLines(s, perLine)) {
    parts.push(line);
    await pause();
  }
  return Buffer.concat(parts);
}

export function decodeSnapshot(data: Uint8Array): FarmState {
  const steps = decodeSteps(data);
  for (;;) {
    const step = steps.next();
    if (step.done) return step.value;
  }
}

/** decodeSnapshot a line at a time, with `pause()` between lines (a follower installing one). */
export async function decodeSnapshotInSlices(
  data: Uint8Array,
  pause: () => Promise<void>,
): Promise<FarmState> {
  const steps = decodeSteps(data);
  for (;;) {
    const step = steps.next();
    if (step.done) return step.value;
    await pause();
  }
}

/** Decodes a snapshot, yielding after each line's work. */
function* decodeSteps(data: Uint8Array): Generator<void, FarmState> {
  if (data.byteLength === 0) return emptyState();
  const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const end = bytes.indexOf(10);
  const first = JSON.parse(bytes.toString('utf8', 0, end < 0 ? bytes.length : end)) as Header | SnapshotV1;
  if (first.format === 1) return yield* restoreSteps(first, first.events.floor, v1Lines(first));
  if (first.format !== SNAPSHOT_FORMAT) {
    throw new Error(
      `farm snapshot format ${String((first as { format: unknown }).format)} is not one this daemon reads (1 to ${SNAPSHOT_FORMAT})`,
    );
  }
  return yield* restoreSteps(first, first.eventsFloor, v2Lines(bytes, end));
}

type Line = [keyof Lists, unknown[]];

function* v2Lines(bytes: Buffer, end: number): Generator<Line> {
  while (end >= 0) {
    const start = end + 1;
    end = bytes.indexOf(10, start);
    yield JSON.parse(bytes.toString('utf8', start, end < 0 ? bytes.length : end)) as Line;
  }
}

/** Format 1's lists (those added after it began are absent from older snapshots). */
function* v1Lines(v1: SnapshotV1): Generator<Line> {
  const { hosts, guests, vms, checkpoints, operations, switches, requests } = v1;
  yield* Object.entries({ hosts, guests, vms, checkpoints, operations, switches, requests }) as Line[];
  yield ['migrations', v1.migrations ?? []];
  yield ['nlbClusters', v1.nlbClusters ?? []];
  yield ['events', v1.events.list];
  yield ['failovers', v1.failovers ?? []];
}

/** How each list's records go into the state (older records get the fields added since). */
const LOADERS: { [K in Exclude<keyof Lists, 'events'>]: (s: FarmState, r: Lists[K][number]) => void } = {
  // Hosts recorded before cluster storage was reported have none.
  hosts: (s, h) => s.hosts.set(h.id, { ...h, clusterStorage: h.clusterStorage ?? false }),
  guests: (s, g) => s.guests.set(g.id, g),
  vms: (s, v) => s.vms.set(v.id, v),
  checkpoints: (s, c) => s.checkpoints.set(c.id, c),
  operations: (s, o) => s.operations.set(o.id, o),
  migrations: (s, m) => s.migrations.set(m.id, m),
  // Switches recorded before these fields were have Hyper-V's defaults.
  switches: (s, w) =>
    s.switches.set(w.id, {
      ...w,
      macAgingSeconds: w.macAgingSeconds ?? 300,
      hostAddress: w.hostAddress ?? '',
      createdAtMs: w.createdAtMs ?? 0,
    }),
  nlbClusters: (s, c) => s.nlbClusters.set(c.id, c),
  requests: (s, [id, result]) => s.requests.set(id, result),
  failovers: (s, [vmId, times]) => s.failovers.set(vmId, times),
};

function* restoreSteps(
  head: { revision: number; settings: FarmSettings; ha?: HaSettings },
  eventsFloor: number,
  lines: Iterable<Line>,
): Generator<void, FarmState> {
  const settings = { ...DEFAULT_SETTINGS, ...head.settings };
  const s = emptyState(settings);
  s.revision = head.revision;
  s.ha = { ...DEFAULT_HA_SETTINGS, ...head.ha };
  const events: FarmEvent[] = [];
  for (const [name, records] of lines) {
    if (name === 'events') {
      for (const e of records) events.push(e as FarmEvent);
    } else {
      const load = LOADERS[name] as ((s: FarmState, r: unknown) => void) | undefined;
      if (!load) throw new Error(`farm snapshot: unknown record list "${String(name)}"`);
      for (const r of records) load(s, r);
    }
    yield;
  }
  s.events = EventWindow.from(settings.eventWindow, eventsFloor, events);
  yield* reindexSteps(s);
  return s;
}

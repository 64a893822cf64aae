import { FORMAT_VERSION } from './commands.js';
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
import { DEFAULT_SETTINGS, emptyState, reindex, type FarmSettings, type FarmState } from './state.js';

/**
 * The farm state as snapshot bytes and back: the truth only (the indices are rebuilt), with the
 * event window and the request ids, so a restored replica resumes Watch and dedupes retries
 * exactly as the one that wrote it. Versioned like the commands: a daemon reads every older
 * format.
 */

interface SnapshotV1 {
  format: 1;
  revision: number;
  settings: FarmSettings;
  hosts: HostRecord[];
  guests: GuestOs[];
  vms: VmRecord[];
  checkpoints: CheckpointRecord[];
  operations: OperationRecord[];
  /** Absent from snapshots written before migrations were recorded. */
  migrations?: MigrationRecord[];
  switches: SwitchRecord[];
  /** Absent in snapshots written before NLB clusters were recorded. */
  nlbClusters?: NlbClusterRecord[];
  events: { floor: number; list: FarmEvent[] };
  requests: [string, string][];
  /** Absent in snapshots written before issue 10. */
  ha?: HaSettings;
  failovers?: [string, number[]][];
}

/**
 * What a snapshot holds, as the state is now. Records are replaced when they change, never
 * edited in place, so these references keep this moment's state while the state moves on.
 */
function capture(s: FarmState): SnapshotV1 {
  return {
    format: FORMAT_VERSION,
    revision: s.revision,
    settings: s.settings,
    hosts: [...s.hosts.values()],
    guests: [...s.guests.values()],
    vms: [...s.vms.values()],
    checkpoints: [...s.checkpoints.values()],
    operations: [...s.operations.values()],
    migrations: [...s.migrations.values()],
    switches: [...s.switches.values()],
    nlbClusters: [...s.nlbClusters.values()],
    events: { floor: s.events.oldestResumable, list: s.events.all() },
    requests: [...s.requests],
    ha: s.ha,
    failovers: [...s.failovers],
  };
}

export function encodeSnapshot(s: FarmState): Uint8Array {
  return Buffer.from(JSON.stringify(capture(s)));
}

/**
 * The same bytes as encodeSnapshot, but the state is only captured at the call: it is encoded
 * `slice` records at a time, with `pause()` between slices, so that a large farm's snapshot (70
 * MiB and seconds of CPU at 50,000 VMs) does not stall the daemon's event loop.
 */
export async function encodeSnapshotInSlices(
  s: FarmState,
  pause: () => Promise<void>,
  slice = 1_000,
): Promise<Uint8Array> {
  const parts: Buffer[] = [];
  const write = async (value: unknown): Promise<void> => {
    if (Array.isArray(value) && value.length > slice) {
      parts.push(Buffer.from('['));
      for (let i = 0; i < value.length; i += slice) {
        parts.push(Buffer.from((i > 0 ? ',' : '') + JSON.stringify(value.slice(i, i + slice)).slice(1, -1)));
        await pause();
      }
      parts.push(Buffer.from(']'));
    } else if (isPlainObject(value)) {
      let sep = '{';
      for (const [k, v] of Object.entries(value)) {
        if (v === undefined) continue;
        parts.push(Buffer.from(`${sep}${JSON.stringify(k)}:`));
        sep = ',';
        await write(v);
      }
      parts.push(Buffer.from(sep === '{' ? '{}' : '}'));
    } else parts.push(Buffer.from(JSON.stringify(value)));
  };
  await write(capture(s));
  return Buffer.concat(parts);
}

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && Object.getPrototypeOf(v) === Object.prototype;

export function decodeSnapshot(data: Uint8Array): FarmState {
  if (data.byteLength === 0) return emptyState();
  const snap = JSON.parse(new TextDecoder().decode(data)) as SnapshotV1;
  if (snap.format !== 1) {
    throw new Error(
      `farm snapshot format ${String(snap.format)} is not one this daemon reads (1 to ${FORMAT_VERSION})`,
    );
  }
  const settings = { ...DEFAULT_SETTINGS, ...snap.settings };
  const s = emptyState(settings);
  s.revision = snap.revision;
  // Hosts recorded before cluster storage was reported have none.
  for (const h of snap.hosts) s.hosts.set(h.id, { ...h, clusterStorage: h.clusterStorage ?? false });
  for (const g of snap.guests) s.guests.set(g.id, g);
  for (const v of snap.vms) s.vms.set(v.id, v);
  for (const c of snap.checkpoints) s.checkpoints.set(c.id, c);
  for (const o of snap.operations) s.operations.set(o.id, o);
  for (const m of snap.migrations ?? []) s.migrations.set(m.id, m);
  // Switches recorded before these fields were have Hyper-V's defaults.
  for (const w of snap.switches)
    s.switches.set(w.id, {
      ...w,
      macAgingSeconds: w.macAgingSeconds ?? 300,
      hostAddress: w.hostAddress ?? '',
      createdAtMs: w.createdAtMs ?? 0,
    });
  for (const c of snap.nlbClusters ?? []) s.nlbClusters.set(c.id, c);
  s.events = EventWindow.from(settings.eventWindow, snap.events.floor, snap.events.list);
  s.requests = new Map(snap.requests);
  s.ha = { ...DEFAULT_HA_SETTINGS, ...snap.ha };
  s.failovers = new Map(snap.failovers ?? []);
  reindex(s);
  return s;
}

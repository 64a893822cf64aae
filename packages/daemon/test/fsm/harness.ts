import { expect } from 'chai';
import {
  applyEntry,
  decodeSnapshot,
  emptyState,
  encodeSnapshot,
  DEFAULT_SETTINGS,
  IdQueue,
  type CheckpointRecord,
  type MigrationRecord,
  type Command,
  type CommandBody,
  type FarmEvent,
  type FarmState,
  type HostRecord,
  type OperationRecord,
  type VmRecord,
} from '../../src/fsm/index.js';
import type { Case } from './datadriven.js';
import { hostPayload, vmConfig } from './fixtures.js';

const MIB = 1024 ** 2;
const short = (s: string, prefix: RegExp) => s.replace(prefix, '').toLowerCase();

/** Runs the directives of the state machine's scenario files against one farm state. */
export class FarmHarness {
  s: FarmState = emptyState();
  private clock = 1000;
  private rid = 0;

  run(c: Case): string {
    const a = c.args;
    switch (c.directive) {
      case 'init': {
        const settings = { ...DEFAULT_SETTINGS };
        for (const [k, v] of a) (settings as Record<string, number>)[k] = Number(v);
        this.s = emptyState(settings);
        return 'ok';
      }
      case 'register':
        return this.apply(c, [
          {
            type: 'host.register',
            ...hostPayload({
              id: a.get('id')!,
              ...(a.has('name') ? { name: a.get('name')! } : {}),
              ...(a.has('mem') ? { memGiB: Number(a.get('mem')) } : {}),
              ...(a.has('lp') ? { lp: Number(a.get('lp')) } : {}),
              ...(a.has('profile') ? { profile: a.get('profile')! } : {}),
              ...(a.has('reserve') ? { reserveMiB: Number(a.get('reserve')) } : {}),
              ...(a.has('overhead') ? { overheadMiB: Number(a.get('overhead')) } : {}),
              ...(a.has('guests') ? { guests: a.get('guests')!.split(',') } : {}),
              ...(a.has('address') ? { address: a.get('address')! } : {}),
            }),
          },
        ]);
      case 'create':
        return this.apply(c, [
          {
            type: 'vm.create',
            vmId: a.get('vm')!,
            opId: a.get('op')!,
            config: vmConfig({
              name: a.get('name')!,
              ...(a.has('mem') ? { memMiB: Number(a.get('mem')) } : {}),
              ...(a.has('cpus') ? { cpus: Number(a.get('cpus')) } : {}),
              ...(a.has('guest') ? { guest: a.get('guest')! } : {}),
              ...(a.has('classes') ? { classes: a.get('classes')!.split(',') } : {}),
              ...(a.has('hard') ? { hard: true } : {}),
              ...(a.has('group') ? { group: a.get('group')! } : {}),
              ...(a.has('macs') ? { macs: a.get('macs')!.split(',') } : {}),
            }),
            start: a.has('start'),
            hostId: a.get('host') ?? '',
          },
        ]);
      case 'place':
        return this.apply(c, [
          {
            type: 'vm.place',
            placements: [...a]
              .filter(([k]) => k !== 'rid' && k !== 't')
              .map(([vmId, hostId]) => ({ vmId, hostId, note: '' })),
          },
        ]);
      case 'report':
        return this.apply(c, [
          {
            type: 'vm.observed',
            reports: [
              {
                vmId: a.get('vm')!,
                hostId: a.get('host')!,
                generation: Number(a.get('gen') ?? 1),
                present: a.get('present') !== 'false',
                state: `VM_STATE_${a.get('state') ?? 'OFF'}` as never,
                heartbeat: `HEARTBEAT_STATUS_${a.get('hb') ?? 'NO_CONTACT'}` as never,
                message: (a.get('msg') ?? '').replace(/_/g, ' '),
                memoryAssignedBytes: Number(a.get('mem') ?? 0) * MIB,
                macs: a.has('macs') ? a.get('macs')!.split(',') : [],
              },
            ],
          },
        ]);
      case 'apply':
        return this.apply(
          c,
          c.input.map((l) => JSON.parse(l) as Command),
        );
      case 'raw':
        return this.format(applyEntry(this.s, new TextEncoder().encode(c.input.join('\n'))));
      case 'state':
        return this.dump();
      case 'events': {
        const from = Number(a.get('from') ?? 0);
        const events = this.s.events.after(from);
        if (!events) return `out of range: the oldest resumable revision is ${this.s.events.oldestResumable}`;
        return events.map(eventLine).join('\n') || '(none)';
      }
      case 'roundtrip': {
        const bytes = encodeSnapshot(this.s);
        const restored = decodeSnapshot(bytes);
        expect(comparable(restored)).to.deep.equal(comparable(this.s));
        expect(encodeSnapshot(restored)).to.deep.equal(bytes);
        this.s = restored;
        return 'identical after snapshot and restore';
      }
      default:
        throw new Error(`line ${c.line}: unknown directive '${c.directive}'`);
    }
  }

  private apply(c: Case, commands: CommandBody[]): string {
    this.clock += 1000;
    // A command line may carry its own rid; a directive's rid= names its only command.
    const full = commands.map((cmd) => ({
      rid: commands.length === 1 && c.args.has('rid') ? c.args.get('rid')! : `r${++this.rid}`,
      t: Number(c.args.get('t') ?? this.clock),
      ...cmd,
    }));
    const data = new TextEncoder().encode(JSON.stringify({ v: 1, cmds: full }));
    return this.format(applyEntry(this.s, data));
  }

  private format(out: ReturnType<typeof applyEntry>): string {
    const lines = out.results.map((r) => {
      if (r.ok) {
        const { ok: _ok, ...rest } = r;
        return Object.keys(rest).length === 0 ? 'ok' : `ok ${JSON.stringify(rest)}`;
      }
      return `error ${r.error.code}: ${r.error.message.split('\n')[0]}${r.error.field ? ` (field ${r.error.field})` : ''}`;
    });
    return [...lines, ...out.events.map(eventLine)].join('\n');
  }

  private dump(): string {
    const sorted = <T extends { id: string }>(m: Map<string, T>) =>
      [...m.values()].sort((x, y) => x.id.localeCompare(y.id));
    return [
      `revision ${this.s.revision}`,
      ...sorted(this.s.hosts).map(hostLine),
      ...sorted(this.s.vms).map(vmLine),
      ...sorted(this.s.checkpoints).map(checkpointLine),
      ...sorted(this.s.operations).map(opLine),
    ].join('\n');
  }
}

function hostLine(h: HostRecord): string {
  const labels = Object.entries(h.labels)
    .map(([k, v]) => `${k}:${v}`)
    .join(',');
  return `host ${h.id} name=${h.name} ${short(h.state, /^HOST_STATE_/)} "${h.stateReason}" block=${h.macBlock}${h.maintenance ? ' maintenance' : ''}${labels ? ` labels=${labels}` : ''} at=${h.address}`;
}

function vmLine(v: VmRecord): string {
  const o = v.observed;
  return `vm ${v.id} ${v.config.name} desired=${short(v.desired, /^VM_STATE_/)} host=${v.hostId || '-'} gen=${v.generation} observed=${short(o.state, /^VM_STATE_/)}${o.present ? '' : '(absent)'}${v.busyOpId ? ` busy=${v.busyOpId}` : ''}${v.placementNote ? ` note="${v.placementNote}"` : ''} "${o.message}"`;
}

function opLine(o: OperationRecord): string {
  const p = o.params as unknown as Record<string, unknown>;
  const extra = 'issued' in p ? ` issued=${String(p.issued)}` : '';
  const result = o.result ? ` result=${o.result.kind}:${o.result.record.id}` : '';
  const error = o.error ? ` error=${o.error.code}` : '';
  return `op ${o.id} ${o.kind} ${o.targetId} ${o.done ? 'done' : `${o.progress}%`}${extra}${result}${error} "${o.message}"`;
}

function checkpointLine(c: CheckpointRecord): string {
  return `checkpoint ${c.id} vm=${c.vmId} "${c.name}" parent=${c.parentId || '-'} memory=${c.includesMemory} ${short(c.vmState, /^VM_STATE_/)}`;
}

function migrationLine(m: MigrationRecord): string {
  return `migration ${m.id} vm=${m.vmId} ${m.sourceHostId}->${m.targetHostId} ${short(m.kind, /^MIGRATION_KIND_/)} ${m.mode} ${short(m.phase, /^MIGRATION_PHASE_/)} decision=${m.decision || '-'} gen=${m.fromGeneration}${m.error ? ` error="${m.error}"` : ''}`;
}

function eventLine(e: FarmEvent): string {
  const type = e.type === 'EVENT_TYPE_PUT' ? 'put' : 'delete';
  const summary =
    e.type === 'EVENT_TYPE_DELETE'
      ? `${short(e.kind, /^RESOURCE_KIND_/)} ${e.id}`
      : e.kind === 'RESOURCE_KIND_HOST'
        ? hostLine(e.resource)
        : e.kind === 'RESOURCE_KIND_VM'
          ? vmLine(e.resource)
          : e.kind === 'RESOURCE_KIND_OPERATION'
            ? opLine(e.resource)
            : e.kind === 'RESOURCE_KIND_MIGRATION'
              ? migrationLine(e.resource)
              : e.kind === 'RESOURCE_KIND_CHECKPOINT'
                ? checkpointLine(e.resource)
                : `${short(e.kind, /^RESOURCE_KIND_/)} ${e.resource.name}`;
  return `  rev ${e.revision} ${type} ${summary}`;
}

/** The state as plain data: every map as its entries, in order; absent and undefined alike. */
function comparable(s: FarmState): unknown {
  const plain = (v: unknown): unknown =>
    v instanceof Map
      ? [...v].map(([k, x]) => [k, plain(x)])
      : v instanceof Set
        ? [...v].sort()
        : v instanceof IdQueue
          ? [...v]
          : v;
  return JSON.parse(
    JSON.stringify({
      ...Object.fromEntries(Object.entries(s).map(([k, v]) => [k, plain(v)])),
      events: { oldest: s.events.oldestResumable, list: s.events.all() },
      // Looked up, never walked: the order of their keys is not the state's (a VM updated goes
      // last in vmByName; a restore indexes in the order of the VM map).
      checkpointsByVm: [...s.checkpointsByVm].map(([k, x]) => [k, [...x]]).sort(),
      vmByName: [...s.vmByName].sort(),
      // Where readers are up to, not state: a restore starts it afresh.
      hostJournal: undefined,
      // Kept as the commands returned them until a snapshot encodes them.
      requests: [...s.requests].map(([k, r]) => [k, typeof r === 'string' ? r : JSON.stringify(r)]),
    }),
  );
}

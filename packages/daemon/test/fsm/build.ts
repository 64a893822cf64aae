import { expect } from 'chai';
import {
  applyEntry,
  emptyState,
  type CommandBody,
  type CommandResult,
  type FarmState,
  type HostStateName,
} from '../../src/fsm/index.js';
import { hostPayload, vmConfig, type HostSpec, type VmSpec } from './fixtures.js';

type Body = CommandBody;

/** A farm state built through real commands, for the scheduler and controller tests. */
export class FarmBuilder {
  private n = 0;
  t = 1_000;

  constructor(readonly s: FarmState = emptyState()) {}

  /** A builder over `s` (a restored copy of this one's state) that goes on where this one is. */
  restoredCopy(s: FarmState): FarmBuilder {
    const b = new FarmBuilder(s);
    b.n = this.n;
    b.t = this.t;
    return b;
  }

  apply(...commands: Body[]): CommandResult[] {
    const cmds = commands.map((c) => ({ rid: `b${++this.n}`, t: this.t, ...c }));
    return applyEntry(this.s, new TextEncoder().encode(JSON.stringify({ v: 1, cmds }))).results;
  }

  /** Applies and insists every command succeeded. */
  must(...commands: Body[]): CommandResult[] {
    const results = this.apply(...commands);
    for (const r of results) expect(r, JSON.stringify(r)).to.include({ ok: true });
    return results;
  }

  host(spec: HostSpec & { state?: HostStateName; maintenance?: boolean }): this {
    this.must({ type: 'host.register', ...hostPayload(spec) });
    if (spec.state && spec.state !== 'HOST_STATE_UP')
      this.must({ type: 'host.state', id: spec.id, state: spec.state, reason: 'test' });
    if (spec.maintenance)
      this.must({
        type: 'host.update',
        id: spec.id,
        paths: ['maintenance'],
        name: '',
        labels: {},
        maintenance: true,
      });
    return this;
  }

  /** A VM created and, with `on`, placed on that host (its report not yet in). */
  vm(id: string, spec: VmSpec, on?: string, opts: { start?: boolean; pinned?: string } = {}): this {
    this.must({
      type: 'vm.create',
      vmId: id,
      opId: `op-${id}`,
      config: vmConfig(spec),
      start: opts.start ?? false,
      hostId: opts.pinned ?? '',
    });
    if (on) {
      const [r] = this.must({ type: 'vm.place', placements: [{ vmId: id, hostId: on, note: '' }] });
      expect(field(r, 'placed'), `placing ${id} on ${on}`).to.deep.equal([id]);
    }
    return this;
  }

  /** Gives the VM's first adapter an IPv4 address (CIDR), as a guest would configure it. */
  address(id: string, cidr: string): this {
    const vm = this.s.vms.get(id)!;
    const nic = { ...vm.config.networkAdapters[0]!, ipv4Address: cidr };
    this.s.vms.set(id, { ...vm, config: { ...vm.config, networkAdapters: [nic] } });
    return this;
  }

  /** The VM as its host reports it. */
  report(id: string, state: string, extra: { present?: boolean; generation?: number } = {}): this {
    const vm = this.s.vms.get(id)!;
    this.must({
      type: 'vm.observed',
      reports: [
        {
          vmId: id,
          hostId: vm.hostId,
          generation: extra.generation ?? vm.generation,
          present: extra.present ?? true,
          state: `VM_STATE_${state}` as never,
          heartbeat: 'HEARTBEAT_STATUS_NO_CONTACT',
          message: '',
          memoryAssignedBytes: 0,
          macs: [],
        },
      ],
    });
    return this;
  }
}

/** A field of a successful result. */
export function field(r: CommandResult | undefined, key: string): unknown {
  expect(r, JSON.stringify(r)).to.include({ ok: true });
  return (r as Record<string, unknown>)[key];
}

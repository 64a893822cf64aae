import type { pb } from '@hyperfarm/api';
import { configDiff } from '../fsm/config-diff.js';
import { operationView, type CommandBody, type CommandResult, type VmConfig } from '../fsm/index.js';
import { planPlacements, type Placement, type PlanItem } from '../scheduler/index.js';
import type { FarmContext } from './farm-context.js';
import type { Ok } from './proposer.js';

/** A create as the handlers checked it, with the ids it will have. */
export interface CreateAsk {
  vmId: string;
  opId: string;
  config: VmConfig;
  start: boolean;
  /** The host asked for, or ''. */
  hostId: string;
  /** Admission control's warning, or ''. */
  warning: string;
  /** The command's request id (`create-vm:<request_id>`), when the caller gave one. */
  rid?: string;
}

interface Queued {
  ask: CreateAsk;
  answer: Promise<pb.Operation>;
  resolve(op: pb.Operation): void;
  reject(err: unknown): void;
}

/**
 * Most bytes of creates (their JSON) per vm.create_compact command: with the placements, a command
 * stays well under RaftNode's 1 MiB entry limit; a bigger turn is split.
 */
const CREATE_BYTES_PER_COMMAND = 256 * 1024;

/** A create's command entry (vm.create_compact's `creates`: the configuration as its differences). */
const createEntry = (ask: CreateAsk) => ({
  rid: ask.rid ?? '',
  vmId: ask.vmId,
  opId: ask.opId,
  config: configDiff(ask.config),
  start: ask.start,
  hostId: ask.hostId,
  warning: ask.warning,
});

/**
 * The vm.create_compact commands of a turn's creates and their placements: each command holds the
 * placements of its own creates, and at most CREATE_BYTES_PER_COMMAND of creates (at least one).
 * Returns, per command, the positions of its creates in `asks`, and the command's JSON (`json`,
 * JSON.stringify's of `cmd`, in pieces: one per create, and the glue between them): each create
 * is encoded once, to measure it and to send it, instead of a second time by the proposer, and
 * the pieces go into the entry's bytes without being joined into one string first.
 */
export function createCommands(
  asks: readonly CreateAsk[],
  placements: readonly Placement[],
): { cmd: Extract<CommandBody, { type: 'vm.create_compact' }>; json: string[]; asks: number[] }[] {
  const at = new Map(placements.map((p) => [p.vmId, p]));
  const out: { cmd: ReturnType<typeof createCommands>[number]['cmd']; creates: string[]; asks: number[] }[] =
    [];
  let bytes = Infinity;
  asks.forEach((ask, i) => {
    const entry = createEntry(ask);
    const json = JSON.stringify(entry);
    if (bytes + json.length > CREATE_BYTES_PER_COMMAND) {
      out.push({ cmd: { type: 'vm.create_compact', creates: [], placements: [] }, creates: [], asks: [] });
      bytes = 0;
    }
    const last = out[out.length - 1]!;
    bytes += json.length;
    last.cmd.creates.push(entry);
    if (last.creates.length > 0) last.creates.push(',');
    last.creates.push(json);
    last.asks.push(i);
    const p = at.get(ask.vmId);
    if (p) last.cmd.placements!.push({ vmId: p.vmId, hostId: p.hostId, note: p.note });
  });
  return out.map(({ cmd, creates, asks: mine }) => ({
    cmd,
    json: [
      '{"type":"vm.create_compact","creates":[',
      ...creates,
      `],"placements":${JSON.stringify(cmd.placements)}}`,
    ],
    asks: mine,
  }));
}

/**
 * The create path's group commit (Nomad's plan applier): the creates that reach this daemon in
 * one turn of the event loop, from any number of CreateVm and CreateVms calls, are planned
 * together on one state snapshot, and go to the log as vm.create_compact commands that carry the
 * plan's placements of their own VMs, so a VM is placed in the command that creates it instead of
 * a controller round later, and a turn of hundreds of creates is a few commands, not hundreds.
 * The state machine checks each placement again against the committed state; a VM whose
 * placement no longer fits (or that the plan found no host for) is created waiting, and the
 * placement controller places it, or fails it with the reasons, as it does every waiting VM.
 * Only the leader plans: a follower forwards the creates, and the leader's controller places them.
 */
export class VmCreator {
  private queue: Queued[] = [];
  private readonly byRid = new Map<string, Queued>();

  constructor(private readonly ctx: FarmContext) {}

  /** Creates the VM; its operation, as it is once the create (and its placement) applied. */
  create(ask: CreateAsk): Promise<pb.Operation> {
    // The same request id twice in one batch is one create: both answer its operation.
    const same = ask.rid === undefined ? undefined : this.byRid.get(ask.rid);
    if (same) return same.answer;
    let resolve!: Queued['resolve'];
    let reject!: Queued['reject'];
    const answer = new Promise<pb.Operation>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const q: Queued = { ask, answer, resolve, reject };
    if (ask.rid !== undefined) this.byRid.set(ask.rid, q);
    if (this.queue.push(q) === 1) setImmediate(() => this.flush());
    return answer;
  }

  private flush(): void {
    const batch = this.queue;
    this.queue = [];
    this.byRid.clear();
    const { machine, proposer } = this.ctx;
    const asks = batch.map((q) => q.ask);
    const placements = this.plan(asks);
    const configs = new Map(asks.map((a) => [a.vmId, a.config]));
    // Submitted in this turn, so the proposer puts them in one entry (split in order past its
    // size limit).
    for (const { cmd, json, asks: mine } of createCommands(asks, placements)) {
      const commit = proposer.submitEncoded(json).then(
        (ok: Ok) => {
          const results = ok['results'] as CommandResult[];
          mine.forEach((i, k) => {
            const r = results[k]!;
            const q = batch[i]!;
            if (r.ok) q.resolve(operationView(machine.state.operations.get(String(r['opId']))!));
            else q.reject(proposer.refusal('vm.create', r.error));
          });
        },
        (err: unknown) => mine.forEach((i) => batch[i]!.reject(err)),
      );
      const held = cmd.placements!.map((p) => ({
        vmId: p.vmId,
        hostId: p.hostId,
        config: configs.get(p.vmId)!,
      }));
      // A refused or failed placement leaves its VM waiting: the controller's to place.
      if (held.length > 0) void this.ctx.runner.placements.during(held, commit);
    }
  }

  /** The placements of this batch, planned on the committed state and those still in flight. */
  private plan(asks: CreateAsk[]): Placement[] {
    if (!this.ctx.runner.leading) return [];
    const items: PlanItem[] = asks.map((a) => ({ vmId: a.vmId, config: a.config, pinnedHostId: a.hostId }));
    const s = this.ctx.machine.state;
    return planPlacements(s, items, this.ctx.scheduler, this.ctx.runner.placements.values()).placements;
  }
}

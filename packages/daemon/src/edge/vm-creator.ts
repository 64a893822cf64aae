import { ApiError, type pb } from '@hyperfarm/api';
import { operationView, type VmConfig } from '../fsm/index.js';
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

/** Most placements per vm.place command: an entry stays well under RaftNode's 1 MiB. */
const PLACEMENTS_PER_COMMAND = 2_000;

/**
 * The create path's group commit (Nomad's plan applier): the creates that reach this daemon in
 * one turn of the event loop, from any number of CreateVm and CreateVms calls, are planned
 * together on one state snapshot, and their vm.create commands and the vm.place of the plan go to
 * the log side by side, so a VM is placed in the entry that creates it instead of a controller
 * round later. The state machine checks each placement again against the committed state; one
 * that no longer fits (or a VM the plan found no host for) is left waiting, and the placement
 * controller places it, or fails it with the reasons, as it does every waiting VM. Only the
 * leader plans: a follower forwards the creates, and the leader's controller places them.
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
    const placements = this.plan(batch.map((q) => q.ask));
    // Submitted in this turn, so the proposer puts them in one entry (split in order past its
    // size limit): the creates first, then the plan that places them.
    for (const { ask, resolve, reject } of batch) {
      const cmd = {
        type: 'vm.create' as const,
        vmId: ask.vmId,
        opId: ask.opId,
        config: ask.config,
        start: ask.start,
        hostId: ask.hostId,
        warning: ask.warning,
      };
      proposer
        .submit(cmd, ask.rid)
        .then(
          (result: Ok) => resolve(operationView(machine.state.operations.get(String(result['opId']))!)),
          reject,
        );
    }
    const configs = new Map(batch.map((q) => [q.ask.vmId, q.ask.config]));
    for (let i = 0; i < placements.length; i += PLACEMENTS_PER_COMMAND) {
      const chunk = placements.slice(i, i + PLACEMENTS_PER_COMMAND);
      const commit = proposer.submit({
        type: 'vm.place',
        placements: chunk.map(({ vmId, hostId, note }) => ({ vmId, hostId, note })),
      });
      const held = chunk.map((p) => ({ vmId: p.vmId, hostId: p.hostId, config: configs.get(p.vmId)! }));
      // A refused or failed placement leaves its VM waiting: the controller's to place.
      this.ctx.runner.placements.during(held, commit).catch((err: unknown) => {
        if (!(err instanceof ApiError)) this.ctx.logger.warn({ err }, 'could not commit a placement plan');
      });
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

import {
  addToLoad,
  antiAffinityClasses,
  copyLoad,
  hostLoad,
  sharedClasses,
  usableMemory,
  type HostLoad,
} from '../fsm/capacity.js';
import type { GuestOs, HostRecord, VmConfig } from '../fsm/model.js';
import type { FarmState } from '../fsm/state.js';
import {
  FILTERS,
  nlbShared,
  refusals,
  softConflicts,
  type FilterContext,
  type NlbPeers,
  type PlacementAsk,
} from './feasible.js';
import { better, fitScore, type Policy } from './rank.js';

export interface SchedulerOptions {
  policy: Policy;
  /** Most virtual processors per logical processor (Hyper-V 2008 R2 supports 8). */
  vcpuRatio: number;
}

export const DEFAULT_SCHEDULER_OPTIONS: SchedulerOptions = { policy: 'binpack', vcpuRatio: 8 };

export interface PlanItem {
  vmId: string;
  config: VmConfig;
  /** Place only here when set. */
  pinnedHostId: string;
}

export interface Placement {
  vmId: string;
  hostId: string;
  score: number;
  /** Why the placement compromised (a soft anti-affinity class shared), or ''. */
  note: string;
}

export interface Plan {
  placements: Placement[];
  /** VMs no host can take, each with the reasons, for a person. */
  failures: { vmId: string; message: string }[];
  /**
   * VMs that no Up host can take but a Suspect or Down one could: liveness comes and goes (a
   * leader change, a loaded machine), so these wait for a host, as Nomad's blocked evaluations
   * do, instead of failing. Each with why, for a person.
   */
  waiting: { vmId: string; message: string }[];
}

/**
 * The hosts of a farm state, with what is committed on them plus what the current plan adds, in
 * flat arrays: a round weighs every host for every VM, so the usual checks are a few
 * comparisons. The filters of feasible.ts stay the definition; `explain` and every refusal go
 * through them, and a property test holds the two to the same answers.
 *
 * The table outlives a plan (`tableFor`): a farm filling up plans one or two VMs at a time, and
 * building the table and each shape's heap from every host for each of them was most of the
 * fill's cost at 1,000 hosts. Between plans it is brought up to date with the hosts whose record
 * or committed load changed (`refresh`: those the state's host journal marked, which marks the
 * hosts of a migration as its VM changes too), and a plan's own additions are taken back at its end (`endPlan`); the
 * heaps get the changed hosts pushed again.
 */
class HostTable {
  readonly hosts: HostRecord[];
  readonly loads: HostLoad[];
  /** Each host's committed load, as hostLoad answered it (the same object while unchanged). */
  private readonly base: HostLoad[];
  /** Hosts this plan added VMs to, to take back at its end. */
  private readonly taken = new Set<number>();
  /** Hosts this plan treats as in maintenance, with their records, to give back at its end. */
  private readonly closed = new Map<number, HostRecord>();
  readonly index = new Map<string, number>();
  private readonly open: Uint8Array;
  private readonly memFree: Float64Array;
  private readonly overhead: Float64Array;
  private readonly usable: Float64Array;
  private readonly vcpuUsed: Float64Array;
  private readonly vcpuCap: Float64Array;
  private readonly vms: Float64Array;
  private readonly slots: Float64Array;
  /** Bumped each time the plan puts a VM on a host: a cached score of that host is stale. */
  private readonly versions: Uint32Array;
  private readonly copied: Uint8Array;
  /**
   * Per VM shape (guest, vCPUs, memory): which hosts' catalog and limits profile take such a VM,
   * and each host's score for it (valid while `seen` matches the host's version + 1). A plan of
   * many alike VMs then scores each host once per placement on it, not once per VM.
   */
  private readonly shapes = new Map<string, Shape>();
  /** Where in the state's host journal the table is up to. */
  private read: number;
  /** The refresh that last looked at each host (a host marked twice is looked at once). */
  private readonly looked: Uint32Array;
  private rounds = 0;

  constructor(
    s: FarmState,
    private ctx: FilterContext,
    readonly policy: Policy,
    except?: string,
  ) {
    this.read = s.hostJournal.end;
    this.hosts = [...s.hosts.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const n = this.hosts.length;
    this.looked = new Uint32Array(n);
    this.base = this.hosts.map((h) => hostLoad(s, h, except));
    this.loads = [...this.base];
    this.open = new Uint8Array(n);
    this.memFree = new Float64Array(n);
    this.overhead = new Float64Array(n);
    this.usable = new Float64Array(n);
    this.vcpuUsed = new Float64Array(n);
    this.vcpuCap = new Float64Array(n);
    this.vms = new Float64Array(n);
    this.slots = new Float64Array(n);
    this.versions = new Uint32Array(n);
    this.copied = new Uint8Array(n);
    this.hosts.forEach((h, i) => {
      this.index.set(h.id, i);
      this.describe(i, h);
      this.sync(i);
    });
  }

  private describe(i: number, h: HostRecord): void {
    this.open[i] = h.state === 'HOST_STATE_UP' && !h.maintenance ? 1 : 0;
    this.usable[i] = usableMemory(h);
    this.overhead[i] = h.capacity.perVmOverheadBytes;
    this.vcpuCap[i] = this.ctx.vcpuRatio * h.capacity.logicalProcessors;
    this.slots[i] = h.limits.maxRunningVmsPerHost;
  }

  /**
   * Brings the table up to `s`, if `s` has the same hosts and options (false otherwise: a new
   * table is needed). The hosts to look at again are those the state's journal marked since the
   * last refresh (a migrating VM's change marks both hosts of its migration, whose loads count
   * it); every host when the journal no longer reaches back that far.
   */
  refresh(s: FarmState, ctx: FilterContext, policy: Policy): boolean {
    if (policy !== this.policy || ctx.vcpuRatio !== this.ctx.vcpuRatio) return false;
    if (s.hosts.size !== this.hosts.length) return false;
    const marked = s.hostJournal.since(this.read);
    this.read = s.hostJournal.end;
    this.ctx = ctx;
    for (const shape of this.shapes.values())
      if (shape.guest !== ctx.guests.get(shape.guestOs)) this.reshape(shape);
    if (!marked) {
      for (let i = 0; i < this.hosts.length; i++) if (!this.refreshHost(s, i)) return false;
      return true;
    }
    const round = ++this.rounds;
    const look = (id: string): boolean => {
      const i = this.index.get(id);
      if (i === undefined) return false;
      if (this.looked[i] === round) return true;
      this.looked[i] = round;
      return this.refreshHost(s, i);
    };
    for (const id of marked) if (!look(id)) return false;
    return true;
  }

  /**
   * Host i as `s` has it: if its record or committed load is another object than last time, it
   * is described and counted again, and if what placement weighs changed, its cached scores go
   * stale and the heaps get it again. False when `s` no longer has the host.
   */
  private refreshHost(s: FarmState, i: number): boolean {
    const host = s.hosts.get(this.hosts[i]!.id);
    if (!host) return false;
    const load = hostLoad(s, host);
    const hostChanged = host !== this.hosts[i];
    if (!hostChanged && load === this.base[i]) return true;
    const [memFree, vcpus, vms] = [this.memFree[i], this.vcpuUsed[i], this.vms[i]];
    if (hostChanged) {
      this.hosts[i] = host;
      this.describe(i, host);
      for (const shape of this.shapes.values()) shape.ok[i] = this.takesShape(i, shape) ? 1 : 0;
    }
    this.base[i] = load;
    this.loads[i] = load;
    this.sync(i);
    const weighedChanged = memFree !== this.memFree[i] || vcpus !== this.vcpuUsed[i] || vms !== this.vms[i];
    if (hostChanged || weighedChanged) this.bump(i);
    return true;
  }

  /** For this plan, host i takes nothing, as if in maintenance (a VM leaving it). */
  close(i: number): void {
    const host = this.hosts[i]!;
    if (this.closed.has(i) || host.maintenance) return;
    this.closed.set(i, host);
    this.hosts[i] = { ...host, maintenance: true };
    this.describe(i, this.hosts[i]);
    this.bump(i);
  }

  /** The plan is over: its additions are taken back, leaving the committed loads. */
  endPlan(): void {
    for (const [i, host] of this.closed) {
      this.hosts[i] = host;
      this.describe(i, host);
      this.bump(i);
    }
    this.closed.clear();
    for (const i of this.taken) {
      this.loads[i] = this.base[i]!;
      this.copied[i] = 0;
      this.sync(i);
      this.bump(i);
    }
    this.taken.clear();
  }

  private sync(i: number): void {
    const load = this.loads[i]!;
    this.memFree[i] = this.usable[i]! - load.memoryBytes;
    this.vcpuUsed[i] = load.vcpus;
    this.vms[i] = load.vms;
  }

  private shape(ask: PlacementAsk): Shape {
    const c = ask.config;
    const key = `${c.guestOs}\u0000${c.processor.count}\u0000${c.memoryBytes}`;
    let shape = this.shapes.get(key);
    if (!shape) {
      const n = this.hosts.length;
      shape = {
        ok: new Uint8Array(n),
        changed: new Uint8Array(n),
        pending: [],
        score: new Float64Array(n),
        seen: new Uint32Array(n),
        memoryBytes: c.memoryBytes,
        vcpus: c.processor.count,
        guestOs: c.guestOs,
        guest: undefined,
        ask: { config: c, classes: new Map() },
      };
      this.reshape(shape);
      this.shapes.set(key, shape);
    }
    return shape;
  }

  /** Which hosts' catalog and limits take the shape, for the guest catalog as it is now. */
  private reshape(shape: Shape): void {
    shape.guest = this.ctx.guests.get(shape.guestOs);
    for (let i = 0; i < this.hosts.length; i++) shape.ok[i] = this.takesShape(i, shape) ? 1 : 0;
    shape.heap = undefined;
    for (const i of shape.pending) shape.changed[i] = 0;
    shape.pending.length = 0;
    shape.seen.fill(0);
  }

  private takesShape(i: number, shape: Shape): boolean {
    return GUEST_FILTER.check(this.ctx, this.hosts[i]!, this.loads[i]!, shape.ask) === undefined;
  }

  /** The best host for `ask` among `candidates`, or undefined when none fits. */
  choose(
    ask: PlacementAsk,
    candidates: Iterable<number>,
  ): { i: number; score: number; conflicts: number } | undefined {
    const c = ask.config;
    const vcpus = c.processor.count;
    const { ok, score: scores, seen } = this.shape(ask);
    const switches = FILTERS.find((f) => f.name === 'switches')!;
    const needsSwitch = c.networkAdapters.some((n) => n.switchName !== '');
    let best: { i: number; score: number; conflicts: number; id: string } | undefined;
    for (const i of candidates) {
      if (!this.open[i] || !ok[i]) continue;
      const need = c.memoryBytes + this.overhead[i]!;
      if (need > this.memFree[i]!) continue;
      if (this.vms[i]! + 1 > this.slots[i]!) continue;
      if (this.vcpuUsed[i]! + vcpus > this.vcpuCap[i]!) continue;
      if (needsSwitch && switches.check(this.ctx, this.hosts[i]!, this.loads[i]!, ask)) continue;
      let conflicts = 0;
      if (ask.classes.size > 0) {
        const shared = sharedClasses(ask.classes, this.loads[i]!);
        if (shared.some((x) => x.hard)) continue;
        conflicts = shared.length;
      }
      if (ask.nlb) conflicts += nlbShared(ask, this.hosts[i]!.id).length;
      if (seen[i] !== this.versions[i]! + 1) {
        scores[i] = fitScore(
          this.policy,
          this.usable[i]! - this.memFree[i]! + need,
          this.usable[i]!,
          this.vcpuUsed[i]! + vcpus,
          this.vcpuCap[i]!,
        );
        seen[i] = this.versions[i]! + 1;
      }
      const score = scores[i]!;
      if (best && conflicts === best.conflicts && score < best.score) continue;
      const cand = { i, score, conflicts, id: this.hosts[i]!.id };
      if (better(cand, best)) best = cand;
    }
    return best;
  }

  /** Host i's score for a VM of `shape` once the VM is on it (choose's formula). */
  private scoreOf(i: number, shape: Shape): number {
    const need = shape.memoryBytes + this.overhead[i]!;
    return fitScore(
      this.policy,
      this.usable[i]! - this.memFree[i]! + need,
      this.usable[i]!,
      this.vcpuUsed[i]! + shape.vcpus,
      this.vcpuCap[i]!,
    );
  }

  /** Whether host i takes one more VM of `shape` (no classes, no switches) as loaded now. */
  private fits(i: number, shape: Shape): boolean {
    return (
      this.open[i] === 1 &&
      shape.ok[i] === 1 &&
      shape.memoryBytes + this.overhead[i]! <= this.memFree[i]! &&
      this.vms[i]! + 1 <= this.slots[i]! &&
      this.vcpuUsed[i]! + shape.vcpus <= this.vcpuCap[i]!
    );
  }

  /**
   * The best host for `ask` among all hosts, as choose would pick it. A VM with no anti-affinity
   * class and no switch (most of a large batch) is weighed by a heap of the hosts by score kept
   * per shape, instead of every host per VM (a plan of 2,000 VMs on 1,000 hosts was two million
   * host checks, 100 us a VM). Within a plan loads only grow, so a host that no longer fits a
   * shape never will again and leaves its heap; a host the plan puts a VM on is pushed again
   * with its new score, and its older entries are skipped as stale.
   */
  best(ask: PlacementAsk): { i: number; score: number; conflicts: number } | undefined {
    if (ask.classes.size > 0 || ask.nlb || ask.config.networkAdapters.some((n) => n.switchName !== ''))
      return this.choose(ask, this.all());
    const shape = this.shape(ask);
    if (shape.heap) this.pushChanged(shape, shape.heap);
    // Entries of hosts that changed since pile up between plans: past a bound, start afresh.
    if (!shape.heap || shape.heap.size > 4 * this.hosts.length + 64) {
      shape.heap = new HostHeap();
      for (let i = 0; i < this.hosts.length; i++)
        if (this.open[i] && shape.ok[i])
          shape.heap.push({ i, score: this.scoreOf(i, shape), v: this.versions[i]! });
    }
    for (let top = shape.heap.peek(); top; top = shape.heap.peek()) {
      if (top.v === this.versions[top.i] && this.fits(top.i, shape))
        return { i: top.i, score: top.score, conflicts: 0 };
      shape.heap.pop();
    }
    return undefined;
  }

  take(i: number, config: VmConfig): void {
    // The loads hostLoad answers are shared: this plan's additions go on a copy of its own.
    if (!this.copied[i]) {
      this.copied[i] = 1;
      this.loads[i] = copyLoad(this.loads[i]!);
    }
    this.taken.add(i);
    addToLoad(this.loads[i]!, this.hosts[i]!, config);
    this.sync(i);
    this.bump(i);
  }

  /**
   * Host i changed: its cached scores are stale, and each heap is to get it with its new score.
   * The push waits for the shape's next `best` (`pushChanged`): a fill's plan changes a host
   * several times (its take, the plan's end, the refresh after the commit) and keeps a heap per
   * shape, most of them not asked for between two changes, so pushing at once was a heap push
   * per shape per change, most of them entries the next push made stale.
   */
  private bump(i: number): void {
    this.versions[i]!++;
    for (const shape of this.shapes.values())
      if (shape.heap && !shape.changed[i]) {
        shape.changed[i] = 1;
        shape.pending.push(i);
      }
  }

  /**
   * Pushes the hosts that changed since the shape's last `best`, each once, with its score as
   * it is now: what an immediate push at its last change held, since every change of what
   * `scoreOf` and `fits` read bumps the host (and a heap's answer depends only on the entries
   * of each host's current version, the others being skipped as stale).
   */
  private pushChanged(shape: Shape, heap: HostHeap): void {
    for (const i of shape.pending) {
      shape.changed[i] = 0;
      if (this.open[i] && shape.ok[i]) heap.push({ i, score: this.scoreOf(i, shape), v: this.versions[i]! });
    }
    shape.pending.length = 0;
  }

  all(): Iterable<number> {
    return this.hosts.keys();
  }

  /** The hosts among `candidates` that would take `ask` if they were Up, as they are loaded now. */
  wouldTakeOnceUp(ask: PlacementAsk, candidates: Iterable<number>): HostRecord[] {
    const out: HostRecord[] = [];
    for (const i of candidates) {
      const host = this.hosts[i]!;
      if (host.state === 'HOST_STATE_UP') continue;
      if (refusals(UNLESS_DOWN, this.ctx, host, this.loads[i]!, ask).length === 0) out.push(host);
    }
    return out;
  }
}

/**
 * Per VM shape (guest, vCPUs, memory): which hosts' catalog and limits profile take such a VM,
 * each host's cached score for it (valid while `seen` matches the host's version + 1), and the
 * hosts by score for `best`.
 */
interface Shape {
  ok: Uint8Array;
  score: Float64Array;
  seen: Uint32Array;
  memoryBytes: number;
  vcpus: number;
  guestOs: string;
  /** The catalog's guest `ok` was worked out for (the catalog changes as hosts register). */
  guest: GuestOs | undefined;
  /** A VM of this shape, for the guest filter. */
  ask: PlacementAsk;
  heap?: HostHeap | undefined;
  /** The hosts changed since the heap last had them pushed (`bump`), each marked in `changed`. */
  changed: Uint8Array;
  pending: number[];
}

const GUEST_FILTER = FILTERS.find((f) => f.name === 'guest')!;

/** A host's score as of its version `v` (stale once the host's version moved on). */
interface Ranked {
  i: number;
  score: number;
  v: number;
}

/** A binary heap of hosts, best first: the higher score, then the lower index (host id order, as `better`). */
class HostHeap {
  private readonly items: Ranked[] = [];

  get size(): number {
    return this.items.length;
  }

  private static before(a: Ranked, b: Ranked): boolean {
    return a.score !== b.score ? a.score > b.score : a.i < b.i;
  }

  peek(): Ranked | undefined {
    return this.items[0];
  }

  push(r: Ranked): void {
    const a = this.items;
    let k = a.push(r) - 1;
    while (k > 0) {
      const parent = (k - 1) >> 1;
      if (!HostHeap.before(a[k]!, a[parent]!)) break;
      [a[k], a[parent]] = [a[parent]!, a[k]!];
      k = parent;
    }
  }

  pop(): void {
    const a = this.items;
    const last = a.pop()!;
    if (a.length === 0) return;
    a[0] = last;
    for (let k = 0; ;) {
      const l = 2 * k + 1;
      const r = l + 1;
      let m = k;
      if (l < a.length && HostHeap.before(a[l]!, a[m]!)) m = l;
      if (r < a.length && HostHeap.before(a[r]!, a[m]!)) m = r;
      if (m === k) return;
      [a[k], a[m]] = [a[m]!, a[k]!];
      k = m;
    }
  }
}

/** Every filter but liveness: what a host would still refuse once it is Up again. */
const UNLESS_DOWN = FILTERS.filter((f) => f.name !== 'state');

/** A placement proposed to the log and not known to be applied yet. */
export interface PendingPlacement {
  hostId: string;
  config: VmConfig;
}

/**
 * Places VMs: a pure function of the state, returning a plan for the state machine to commit
 * (Nomad's generic scheduler). VMs are placed in the order given, each seeing the ones before
 * it, so one plan never overcommits a host. `pending` are placements of earlier plans still on
 * their way through the log: they count as taken, as Nomad's plan queue applies a plan on top of
 * the ones before it, so plans made back to back do not all pick the same room (the state
 * machine would refuse all but the first, and the VMs would wait for another round).
 * `closedHostId` takes nothing in this plan, as if it were in maintenance (VMs moving off it).
 */
export function planPlacements(
  s: FarmState,
  items: readonly PlanItem[],
  opts: SchedulerOptions,
  pending: Iterable<PendingPlacement> = [],
  closedHostId?: string,
): Plan {
  const ctx = filterContext(s, opts);
  const table = tableFor(s, ctx, opts.policy);
  try {
    const closed = closedHostId === undefined ? undefined : table.index.get(closedHostId);
    if (closed !== undefined) table.close(closed);
    return plan(s, table, ctx, items, pending);
  } finally {
    table.endPlan();
  }
}

/** Each farm state's host table, kept between plans (see HostTable). */
const tables = new WeakMap<FarmState, HostTable>();

function tableFor(s: FarmState, ctx: FilterContext, policy: Policy): HostTable {
  let table = tables.get(s);
  if (!table?.refresh(s, ctx, policy)) tables.set(s, (table = new HostTable(s, ctx, policy)));
  return table;
}

function plan(
  s: FarmState,
  table: HostTable,
  ctx: FilterContext,
  items: readonly PlanItem[],
  pending: Iterable<PendingPlacement>,
): Plan {
  // Where NLB members are going in this plan and those in flight (by VM id), over the state's.
  const moving = s.nlbClusters.size > 0 ? new Map<string, string>() : undefined;
  for (const p of pending) {
    const i = table.index.get(p.hostId);
    if (i !== undefined) table.take(i, p.config);
    const vmId = moving && s.vmByName.get(p.config.name);
    if (vmId !== undefined) moving?.set(vmId, p.hostId);
  }
  const plan: Plan = { placements: [], failures: [], waiting: [] };
  for (const item of items) {
    const ask: PlacementAsk = { config: item.config, classes: antiAffinityClasses(item.config) };
    const nlb = moving && nlbPeers(s, item.vmId, moving);
    if (nlb) ask.nlb = nlb;
    const candidates = (): Iterable<number> => {
      if (!item.pinnedHostId) return table.all();
      const i = table.index.get(item.pinnedHostId);
      return i === undefined ? [] : [i];
    };
    const best = item.pinnedHostId ? table.choose(ask, candidates()) : table.best(ask);
    if (!best) {
      const later = table.wouldTakeOnceUp(ask, candidates());
      if (later.length > 0) plan.waiting.push({ vmId: item.vmId, message: waitingMessage(ask, later) });
      else
        plan.failures.push({ vmId: item.vmId, message: noHostMessage(table, ctx, ask, item.pinnedHostId) });
      continue;
    }
    const host = table.hosts[best.i]!;
    const note = best.conflicts > 0 ? softConflictNote(ask, table.loads[best.i]!, host.id) : '';
    table.take(best.i, item.config);
    moving?.set(item.vmId, host.id);
    plan.placements.push({ vmId: item.vmId, hostId: host.id, score: best.score, note });
  }
  return plan;
}

export interface Verdict {
  hostId: string;
  feasible: boolean;
  /** Why the host is refused; for a feasible one, the soft rules it would break (softConflicts). */
  reasons: string[];
  /** The fit score less one per soft rule broken (a soft class shared, an NLB cluster's member there); 0 when refused. */
  score: number;
}

/**
 * For every host, whether it could take the VM and why not, and the host placement would pick
 * (Nomad's placement annotations). An existing VM is weighed as if it were not placed yet.
 */
export function explainPlacement(
  s: FarmState,
  config: VmConfig,
  opts: SchedulerOptions,
  vmId?: string,
): { verdicts: Verdict[]; chosen: string } {
  const ctx = filterContext(s, opts);
  const table = new HostTable(s, ctx, opts.policy, vmId);
  const ask: PlacementAsk = { config, classes: antiAffinityClasses(config) };
  const nlb = vmId !== undefined ? nlbPeers(s, vmId, new Map()) : undefined;
  if (nlb) ask.nlb = nlb;
  const verdicts = table.hosts.map((host, i): Verdict => {
    const load = table.loads[i]!;
    const reasons = refusals(FILTERS, ctx, host, load, ask);
    if (reasons.length > 0) return { hostId: host.id, feasible: false, reasons, score: 0 };
    const cost = config.memoryBytes + host.capacity.perVmOverheadBytes;
    const score = fitScore(
      opts.policy,
      load.memoryBytes + cost,
      usableMemory(host),
      load.vcpus + config.processor.count,
      ctx.vcpuRatio * host.capacity.logicalProcessors,
    );
    // A feasible host's reasons are the soft rules it breaks, one point of score each.
    const soft = softConflicts(ask, host, load);
    return { hostId: host.id, feasible: true, reasons: soft, score: score - soft.length };
  });
  const best = table.choose(ask, table.all());
  return { verdicts, chosen: best ? table.hosts[best.i]!.id : '' };
}

export function filterContext(s: FarmState, opts: SchedulerOptions): FilterContext {
  return { guests: s.guests, switches: s.switches, vcpuRatio: opts.vcpuRatio };
}

/**
 * The NLB clusters VM `vmId` is a member of (undefined: none), each with the hosts its other
 * members are on: where this plan or one in flight puts them (`moving`), else where they are.
 */
function nlbPeers(s: FarmState, vmId: string, moving: ReadonlyMap<string, string>): NlbPeers[] | undefined {
  let out: NlbPeers[] | undefined;
  for (const c of s.nlbClusters.values()) {
    if (!c.members.some((m) => m.vmId === vmId)) continue;
    const hosts = new Map<string, string>();
    for (const m of c.members) {
      const vm = m.vmId === vmId ? undefined : s.vms.get(m.vmId);
      const hostId = vm && (moving.get(vm.id) ?? vm.hostId);
      if (vm && hostId && !hosts.has(hostId)) hosts.set(hostId, vm.config.name);
    }
    (out ??= []).push({ cluster: c.name, hosts });
  }
  return out;
}

function softConflictNote(ask: PlacementAsk, load: HostLoad, hostId: string): string {
  const notes: string[] = [];
  const shared = sharedClasses(ask.classes, load);
  if (shared.length > 0) {
    const first = shared[0]!;
    const classes = shared.map((c) => `'${c.name}'`).join(', ');
    notes.push(
      `soft anti-affinity class${shared.length > 1 ? 'es' : ''} ${classes} shared with VM '${first.with}' on host '${hostId}': no host without ${shared.length > 1 ? 'them' : 'it'} fit`,
    );
  }
  for (const n of nlbShared(ask, hostId))
    notes.push(
      `NLB cluster '${n.cluster}' has member '${n.with}' on host '${hostId}' too: no host without one fit (Windows NLB runs one member per host)`,
    );
  return notes.join('; ');
}

const SHOWN_HOSTS = 5;

function waitingMessage(ask: PlacementAsk, hosts: HostRecord[]): string {
  const named = hosts
    .slice(0, SHOWN_HOSTS)
    .map((h) => `${h.id} (${h.state === 'HOST_STATE_DOWN' ? 'Down' : 'Suspect'})`)
    .join(', ');
  const more = hosts.length > SHOWN_HOSTS ? ` and ${hosts.length - SHOWN_HOSTS} more` : '';
  return `waiting for a host: no Up host can take VM '${ask.config.name}'; ${named}${more} could once Up again`;
}

/** How a refusal is counted in the summary, by the first filter that refused. */
const SUMMARY: Record<string, string> = {
  state: 'not Up',
  maintenance: 'in maintenance',
  guest: 'cannot run this guest',
  memory: 'short of memory',
  vms: 'full of VMs',
  'vcpu-ratio': 'short of processors',
  switches: 'without its switch',
  'anti-affinity': 'holding a hard anti-affinity class of it',
};

/**
 * Why no host took the VM, naming hosts and reasons up to a bound, then a count per reason, so
 * the message stays readable on a farm of a thousand hosts.
 */
function noHostMessage(table: HostTable, ctx: FilterContext, ask: PlacementAsk, pinned: string): string {
  const name = ask.config.name;
  if (pinned && !table.index.has(pinned))
    return `cannot place VM '${name}' on host '${pinned}': no such host`;
  if (table.hosts.length === 0) return `no host can take VM '${name}': the farm has no hosts`;
  const judged = pinned ? [table.index.get(pinned)!] : [...table.all()];
  const lines: string[] = [];
  const counts = new Map<string, number>();
  for (const i of judged) {
    const host = table.hosts[i]!;
    const failed = FILTERS.map((f) => ({ f, reason: f.check(ctx, host, table.loads[i]!, ask) })).filter(
      (x) => x.reason !== undefined,
    );
    const label = SUMMARY[failed[0]?.f.name ?? ''] ?? 'refused';
    counts.set(label, (counts.get(label) ?? 0) + 1);
    if (lines.length < SHOWN_HOSTS) lines.push(`${host.id}: ${failed.map((x) => x.reason).join(', ')}`);
  }
  let message = `no host can take VM '${name}': ${lines.join('; ')}`;
  if (judged.length > SHOWN_HOSTS) {
    const summary = [...counts].map(([k, n]) => `${n} ${k}`).join(', ');
    message += `; and ${judged.length - SHOWN_HOSTS} more hosts (of ${judged.length}: ${summary})`;
  }
  return message;
}

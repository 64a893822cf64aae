import type { Logger } from '@hyperfarm/api';
import { hostNetworkConfig, tunnelPeers } from '../controllers/index.js';
import type { FarmStateMachine } from '../fsm/index.js';
import type { AppliedNetworkReport } from './controller-runner.js';
import type { NetworkAgents } from './network-api.js';
import type { Proposer } from './proposer.js';
import { realTimers, type Timers } from './timers.js';

/** An Up host's configuration as built for a round, and where its agent answers. */
interface Built {
  address: string;
  cfg: ReturnType<typeof hostNetworkConfig>;
  json: string;
}

/** How often the leader checks that Up agents still hold what it pushed (an agent restart). */
const VERIFY_MS = 2_000;
/**
 * Agents asked GetNetworkConfig per check at most, in turn: only agents whose lease answers do
 * not say what they applied (older than GrantLeaseResponse.network) are asked, and a restarted
 * agent registers anew, which already makes the pusher push again, so the check is a safety
 * net and need not cost 500 calls a second at 1,000 hosts.
 */
const VERIFY_HOSTS = 100;
/**
 * Agents pushed to at once at most: a new term's first round pushes to every Up host, and 1,000
 * calls opened in one turn (each failing one with a stack trace on a loaded leader) held its
 * event loop long enough to lose the leadership.
 */
export const PUSH_IN_FLIGHT = 32;

/** The real clock, its timers not keeping the process alive (a daemon that stops leading exits). */
const backgroundTimers: Timers = { ...realTimers, set: (fn, ms) => setTimeout(fn, ms).unref() };

/** What the leader's lease answers said of each host's network (ControllerRunner.appliedNetwork). */
export type AppliedNetworks = (hostId: string) => AppliedNetworkReport | undefined;

/**
 * While this daemon leads: pushes each Up host's network configuration to its agent when it
 * changes, again when the host registers anew or the agent reports another revision than the
 * one pushed (it restarted, or lost it), and at the start of every term. What an agent applied
 * comes with its lease answers (`applied`); only agents that do not say are asked for it. Also
 * carries drainstop operations through: asks the member's host to drainstop it and ends the
 * operation once the member reports itself stopped.
 */
export class NetworkPusher {
  private session: { term: number; stop(): void } | undefined;

  constructor(
    private readonly machine: FarmStateMachine,
    private readonly proposer: Proposer,
    private readonly net: NetworkAgents,
    private readonly logger: Logger,
    private readonly timers: Timers = backgroundTimers,
    private readonly applied: AppliedNetworks = () => undefined,
  ) {}

  start(term: number): void {
    if (this.session?.term === term) return;
    this.stop();
    /** Per host, what it holds: the configuration pushed, its revision and when it was confirmed. */
    const pushed = new Map<string, { json: string; revision: number; atMs: number }>();
    const asked = new Set<string>();
    /** Drainstop operations not done, to carry through (the farm's other operations are not read). */
    const drainstops = new Set<string>();
    for (const op of this.machine.state.operations.values())
      if (!op.done && op.params.kind === 'nlb.drainstop') drainstops.add(op.id);
    /**
     * Grows with every change the hosts' configurations are made of (hosts, switches, NLB
     * clusters, their members' VMs, a restored snapshot): the configurations are built again
     * only then, not every round (each Up host's, 1,000 of them every 2 s, was most of an idle
     * leader's pusher).
     */
    let epoch = 0;
    let built: { epoch: number; configs: Map<string, Built> } | undefined;
    /** The VMs of NLB clusters' members, whose creation or removal changes the configurations. */
    let members: Set<string> | undefined;
    /** The last round left hosts unpushed (a failed push), or a check found one to push again. */
    let unsettled = true;
    let closed = false;
    let queued = false;
    const configs = () => {
      if (built?.epoch === epoch) return built.configs;
      const s = this.machine.state;
      const peers = tunnelPeers(s);
      const map = new Map<string, Built>();
      for (const h of s.hosts.values()) {
        if (h.state !== 'HOST_STATE_UP') continue;
        const cfg = hostNetworkConfig(s, h.id, peers);
        map.set(h.id, { address: h.address, cfg, json: JSON.stringify(cfg) });
      }
      built = { epoch, configs: map };
      return map;
    };
    const round = async () => {
      const s = this.machine.state;
      // Every configuration from the state of the round's start, as one, then pushed a few
      // agents at a time.
      const revision = s.revision;
      const due = [...configs()].filter(([id, { json }]) => pushed.get(id)?.json !== json);
      let next = 0;
      let failed = false;
      const push = async () => {
        while (next < due.length && !closed) {
          const [id, { address, cfg, json }] = due[next++]!;
          try {
            await this.net.of(address).applyNetworkConfig({ ...cfg, revision }, { timeoutMs: 10_000 });
            if (!closed) pushed.set(id, { json, revision, atMs: this.timers.now() });
          } catch (err) {
            failed = true;
            this.logger.warn({ err, host: id }, 'network configuration not pushed; trying again');
          }
        }
      };
      unsettled = false;
      await Promise.all(Array.from({ length: Math.min(PUSH_IN_FLIGHT, due.length) }, push));
      unsettled ||= failed;
      for (const opId of drainstops) {
        const op = s.operations.get(opId);
        if (!op || op.done || op.params.kind !== 'nlb.drainstop') {
          drainstops.delete(opId);
          continue;
        }
        const { clusterId, vmId } = op.params;
        const vm = s.vms.get(vmId);
        const host = vm && s.hosts.get(vm.hostId);
        if (!host) continue;
        const c = this.net.of(host.address);
        try {
          if (!asked.has(op.id)) {
            await c.controlNlbMember(
              { clusterId, vmId, action: 'NLB_CONTROL_DRAINSTOP' },
              { timeoutMs: 10_000 },
            );
            asked.add(op.id);
          }
          const st = await c.getNlbState({ clusterId }, { timeoutMs: 10_000 });
          if (st.members.find((m) => m.vmId === vmId)?.state === 'stopped')
            await this.proposer.submit({ type: 'nlb.drainstop.end', opId: op.id, error: '' });
        } catch (err) {
          this.logger.warn({ err, op: op.id }, 'drainstop not carried through yet; trying again');
        }
      }
    };
    // One round at a time: a change while a round runs is pushed by the round after it, from
    // the state of then, rather than by a second round pushing the same hosts alongside.
    let running = false;
    let again = false;
    const run = async () => {
      queued = false;
      running = true;
      try {
        await round();
      } finally {
        running = false;
      }
      if (again) {
        again = false;
        schedule();
      }
    };
    const schedule = () => {
      if (closed) return;
      if (running) again = true;
      else if (!queued) {
        queued = true;
        this.timers.set(() => void run(), 20);
      }
    };
    /** Pushed again by the next round: the agent does not hold what it was sent. */
    const repush = (hostId: string) => {
      pushed.delete(hostId);
      unsettled = true;
    };
    const unsubscribe = this.machine.onApplied((a) => {
      let relevant = false;
      for (const e of a.events) {
        switch (e.kind) {
          // A host registering anew may be an agent that restarted with nothing.
          case 'RESOURCE_KIND_HOST':
            repush(e.id);
            epoch++;
            relevant = true;
            break;
          case 'RESOURCE_KIND_SWITCH':
          case 'RESOURCE_KIND_NLB_CLUSTER':
            members = undefined;
            epoch++;
            relevant = true;
            break;
          case 'RESOURCE_KIND_VM':
            // A member's VM created or removed: its cluster's members as configured change.
            members ??= new Set(
              [...this.machine.state.nlbClusters.values()].flatMap((c) => c.members.map((m) => m.vmId)),
            );
            if (members.has(e.id)) {
              epoch++;
              relevant = true;
            }
            break;
          case 'RESOURCE_KIND_OPERATION':
            // A round costs little when nothing changed, but the operations of VM creates and
            // changes (thousands a second under load) wake it only when they are drainstops.
            if (this.machine.state.operations.get(e.id)?.params.kind === 'nlb.drainstop') {
              drainstops.add(e.id);
              relevant = true;
            }
            break;
          default:
            break;
        }
      }
      if (relevant) schedule();
    });
    // A snapshot replaces the state without events: every configuration is built again.
    const unrestored = this.machine.onRestored(() => {
      members = undefined;
      epoch++;
      schedule();
    });
    let verifyFrom = 0;
    let verifyTimer: unknown;
    const verify = () => {
      const s = this.machine.state;
      // Agents that do not say what they applied in their lease answers, to ask in turn.
      const silent: { id: string; address: string; revision: number }[] = [];
      for (const h of s.hosts.values()) {
        const mine = pushed.get(h.id);
        if (!mine || h.state !== 'HOST_STATE_UP') continue;
        const report = this.applied(h.id);
        // No lease answer yet this term, or one from an agent that does not say: asked.
        if (report?.revision === undefined) {
          silent.push({ id: h.id, address: h.address, revision: mine.revision });
          continue;
        }
        // An answer to a grant sent before the push was confirmed may show the host before it.
        if (report.sentMs > mine.atMs && report.revision !== mine.revision) repush(h.id);
      }
      const turn =
        silent.length <= VERIFY_HOSTS
          ? silent
          : Array.from({ length: VERIFY_HOSTS }, (_, i) => silent[(verifyFrom + i) % silent.length]!);
      verifyFrom = (verifyFrom + VERIFY_HOSTS) % Math.max(1, silent.length);
      for (const h of turn) {
        this.net
          .of(h.address)
          .getNetworkConfig({}, { timeoutMs: 5_000 })
          .then((cfg) => {
            if (Number(cfg.revision) < h.revision && pushed.get(h.id)?.revision === h.revision) {
              repush(h.id);
              schedule();
            }
          })
          .catch(() => undefined);
      }
      if (unsettled || drainstops.size > 0 || built?.epoch !== epoch) schedule();
      if (!closed) verifyTimer = this.timers.set(verify, VERIFY_MS);
    };
    verifyTimer = this.timers.set(verify, VERIFY_MS);
    schedule();
    this.session = {
      term,
      stop: () => {
        closed = true;
        unsubscribe();
        unrestored();
        this.timers.clear(verifyTimer);
      },
    };
  }

  stop(): void {
    this.session?.stop();
    this.session = undefined;
  }
}

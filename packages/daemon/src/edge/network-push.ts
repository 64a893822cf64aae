import type { Logger } from '@hyperfarm/api';
import { hostNetworkConfig, tunnelPeers } from '../controllers/index.js';
import type { FarmStateMachine } from '../fsm/index.js';
import type { NetworkAgents } from './network-api.js';
import type { Proposer } from './proposer.js';
import { realTimers, type Timers } from './timers.js';

/** How often the leader checks that Up agents still hold what it pushed (an agent restart). */
const VERIFY_MS = 2_000;
/**
 * Agents asked per check at most, in turn: a restarted agent registers anew, which already
 * makes the pusher push again, so the check is a safety net and need not cost 500 calls a
 * second at 1,000 hosts.
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

/**
 * While this daemon leads: pushes each Up host's network configuration to its agent when it
 * changes, again when the host registers anew or the agent answers with an older revision (it
 * restarted), and at the start of every term. Also carries drainstop operations through: asks
 * the member's host to drainstop it and ends the operation once the member reports itself
 * stopped.
 */
export class NetworkPusher {
  private session: { term: number; stop(): void } | undefined;

  constructor(
    private readonly machine: FarmStateMachine,
    private readonly proposer: Proposer,
    private readonly net: NetworkAgents,
    private readonly logger: Logger,
    private readonly timers: Timers = backgroundTimers,
  ) {}

  start(term: number): void {
    if (this.session?.term === term) return;
    this.stop();
    const pushed = new Map<string, { json: string; revision: number }>();
    const asked = new Set<string>();
    let closed = false;
    let queued = false;
    const round = async () => {
      const s = this.machine.state;
      const peers = tunnelPeers(s);
      // Every configuration from the state of the round's start, as one, then pushed a few
      // agents at a time.
      const revision = s.revision;
      const due = [...s.hosts.values()]
        .filter((h) => h.state === 'HOST_STATE_UP')
        .map((h) => {
          const cfg = hostNetworkConfig(s, h.id, peers);
          return { h, cfg, json: JSON.stringify(cfg) };
        })
        .filter(({ h, json }) => pushed.get(h.id)?.json !== json);
      let next = 0;
      const push = async () => {
        while (next < due.length && !closed) {
          const { h, cfg, json } = due[next++]!;
          try {
            await this.net.of(h.address).applyNetworkConfig({ ...cfg, revision }, { timeoutMs: 10_000 });
            if (!closed) pushed.set(h.id, { json, revision });
          } catch (err) {
            this.logger.warn({ err, host: h.id }, 'network configuration not pushed; trying again');
          }
        }
      };
      await Promise.all(Array.from({ length: Math.min(PUSH_IN_FLIGHT, due.length) }, push));
      for (const op of s.operations.values()) {
        if (op.done || op.params.kind !== 'nlb.drainstop') continue;
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
    const unsubscribe = this.machine.onApplied((a) => {
      let relevant = false;
      for (const e of a.events) {
        // A host registering anew may be an agent that restarted with nothing.
        if (e.kind === 'RESOURCE_KIND_HOST') pushed.delete(e.id);
        // A round costs a configuration per host: the operations of VM creates and changes
        // (thousands a second under load) wake it only when they are drainstops.
        if (e.kind === 'RESOURCE_KIND_OPERATION')
          relevant ||= this.machine.state.operations.get(e.id)?.params.kind === 'nlb.drainstop';
        else if (e.kind !== 'RESOURCE_KIND_VM') relevant = true;
      }
      if (relevant) schedule();
    });
    let verifyFrom = 0;
    let verifyTimer: unknown;
    const verify = () => {
      const s = this.machine.state;
      const hosts = [...s.hosts.values()];
      const turn =
        hosts.length <= VERIFY_HOSTS
          ? hosts
          : Array.from({ length: VERIFY_HOSTS }, (_, i) => hosts[(verifyFrom + i) % hosts.length]!);
      verifyFrom = (verifyFrom + VERIFY_HOSTS) % Math.max(1, hosts.length);
      for (const h of turn) {
        const mine = pushed.get(h.id);
        if (!mine || h.state !== 'HOST_STATE_UP') continue;
        this.net
          .of(h.address)
          .getNetworkConfig({}, { timeoutMs: 5_000 })
          .then((cfg) => {
            if (Number(cfg.revision) < mine.revision) {
              pushed.delete(h.id);
              schedule();
            }
          })
          .catch(() => undefined);
      }
      schedule();
      if (!closed) verifyTimer = this.timers.set(verify, VERIFY_MS);
    };
    verifyTimer = this.timers.set(verify, VERIFY_MS);
    schedule();
    this.session = {
      term,
      stop: () => {
        closed = true;
        unsubscribe();
        this.timers.clear(verifyTimer);
      },
    };
  }

  stop(): void {
    this.session?.stop();
    this.session = undefined;
  }
}

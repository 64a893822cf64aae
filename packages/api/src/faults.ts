import * as grpc from '@grpc/grpc-js';
import { invalidArgument } from './errors.js';
import type * as pb from './generated/pb.js';
import { unary } from './handlers.js';

/**
 * Fault injection in the transport, for drills and tests (see docs/drills.md). A process started
 * with faults enabled calls `enableFaults` before it makes any channel or server; from then on
 * `createClient` and `createServer` add the interceptors below, and the process serves
 * FaultService. Without it nothing here runs: a production farm carries no interceptor.
 *
 * Each call names its sender in the `x-hyperfarm-fault-from` header ("name addr addr..."), so a
 * receiver knows which link a call came in on; a caller knows the link by the address it calls.
 * A rule on a link can cut it (new calls refused with UNAVAILABLE, calls in flight broken), delay
 * every message, or drop a share of messages (a dropped message fails its call with UNAVAILABLE,
 * as a lost packet ends a TCP connection: grpc-js cannot lose one message of a stream silently).
 */

export const FAULT_FROM_HEADER = 'x-hyperfarm-fault-from';
const MAX_DELAY_MS = 60_000;
const MAX_STALL_MS = 60_000;
/** Calls never subject to faults: the fault controls themselves, health and reflection. */
const EXEMPT = /^\/(hyperfarm\.v1\.FaultService|grpc\.)/;

interface PeerId {
  name: string;
  addresses: string[];
}

interface LinkEffect {
  cut: boolean;
  delayMs: number;
  dropShare: number;
}

interface Breakable {
  peer: PeerId;
  /** Fails the call with UNAVAILABLE, once. */
  fail(details: string): void;
}

type Way = 'outbound' | 'inbound';

const NONE: LinkEffect = { cut: false, delayMs: 0, dropShare: 0 };

/** A small seeded generator (mulberry32): drops are reproducible from the seed. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class FaultInjector {
  private readonly rules = new Map<string, pb.LinkRule__Output>();
  private readonly active = new Set<Breakable>();
  private readonly addresses: string[] = [];
  private readonly random: () => number;
  private storageFull = false;
  private readonly storageListeners: ((full: boolean) => void)[] = [];
  readonly counters = { callsCut: 0, messagesDropped: 0, messagesDelayed: 0, stalls: 0 };

  constructor(
    readonly name: string,
    seed: number,
  ) {
    this.random = seeded(seed);
  }

  /** Adds an address this process serves, so peers' rules naming it match calls from here. */
  addAddress(address: string): void {
    if (!this.addresses.includes(address)) this.addresses.push(address);
  }

  get isStorageFull(): boolean {
    return this.storageFull;
  }

  /** Calls `fn` whenever the storage is marked full or not. */
  onStorage(fn: (full: boolean) => void): void {
    this.storageListeners.push(fn);
  }

  state(): pb.FaultState {
    return {
      process: this.name,
      rules: [...this.rules.values()],
      storageFull: this.storageFull,
      ...this.counters,
    };
  }

  setRules(rules: pb.LinkRule__Output[]): void {
    rules.forEach((r, i) => {
      const field = `rules[${i}]`;
      if (r.direction === 'LINK_DIRECTION_UNSPECIFIED')
        throw invalidArgument(`${field}.direction`, 'name OUTBOUND, INBOUND or BOTH');
      if (!Number.isFinite(r.dropShare) || r.dropShare < 0 || r.dropShare > 1)
        throw invalidArgument(`${field}.drop_share`, 'expected a share from 0 to 1');
      if (r.delayMs > MAX_DELAY_MS) throw invalidArgument(`${field}.delay_ms`, `at most ${MAX_DELAY_MS}`);
      const peer = r.peer ?? { name: '', addresses: [] };
      if (peer.addresses.some((a) => !/^[^\s]+:\d{1,5}$/.test(a)))
        throw invalidArgument(`${field}.peer.addresses`, 'expected host:port');
    });
    for (const r of rules) {
      const peer = r.peer ?? { name: '', addresses: [] };
      this.rules.set(`${peer.name}|${[...peer.addresses].sort().join(',')}|${r.direction}`, { ...r, peer });
    }
    // A cut breaks the calls already on the link, as a partition breaks open connections.
    for (const c of [...this.active]) {
      for (const way of ['outbound', 'inbound'] as const)
        if (this.effect(way, c.peer).cut) {
          this.counters.callsCut++;
          c.fail(`fault injected: the link ${this.describe(way, c.peer)} is cut`);
          break;
        }
    }
  }

  clearRules(peers: string[]): void {
    for (const [key, r] of this.rules)
      if (peers.length === 0 || peers.includes(r.peer!.name)) this.rules.delete(key);
  }

  setStorageFull(full: boolean): void {
    this.storageFull = full;
    for (const fn of this.storageListeners) fn(full);
  }

  /** What the rules do to traffic on the link with `peer` going `way`. */
  effect(way: Way, peer: PeerId): LinkEffect {
    let out = NONE;
    for (const r of this.rules.values()) {
      const dir = r.direction;
      if (
        dir !== 'LINK_DIRECTION_BOTH' &&
        dir !== (way === 'outbound' ? 'LINK_DIRECTION_OUTBOUND' : 'LINK_DIRECTION_INBOUND')
      )
        continue;
      if (!matches(r.peer!, peer)) continue;
      out = {
        cut: out.cut || r.cut,
        delayMs: Math.max(out.delayMs, r.delayMs),
        dropShare: Math.max(out.dropShare, r.dropShare),
      };
    }
    return out;
  }

  /**
   * Decides one message's fate on a link: passed now, passed after a delay, or failed (cut or
   * dropped), with the reason.
   */
  private fate(way: Way, peer: PeerId): { fail?: string; delayMs: number } {
    const e = this.effect(way, peer);
    if (e.cut) {
      this.counters.callsCut++;
      return { fail: `fault injected: the link ${this.describe(way, peer)} is cut`, delayMs: 0 };
    }
    if (e.dropShare > 0 && this.random() < e.dropShare) {
      this.counters.messagesDropped++;
      return { fail: `fault injected: a message ${this.describe(way, peer)} was dropped`, delayMs: 0 };
    }
    if (e.delayMs > 0) this.counters.messagesDelayed++;
    return { delayMs: e.delayMs };
  }

  private describe(way: Way, peer: PeerId): string {
    const other = peer.name || peer.addresses.join(',') || '?';
    return way === 'outbound' ? `from ${this.name} to ${other}` : `from ${other} to ${this.name}`;
  }

  private identity(): string {
    return [this.name, ...this.addresses].join(' ');
  }

  /** The interceptor for a channel to `target` (host:port). */
  clientInterceptor(target: string): grpc.Interceptor {
    return (options, nextCall) => {
      if (EXEMPT.test(options.method_definition.path)) return new grpc.InterceptingCall(nextCall(options));
      const peer: PeerId = { name: '', addresses: [target] };
      let outer: grpc.InterceptingListener | undefined;
      let started = false;
      let dead = false;
      const entry: Breakable = {
        peer,
        fail: (details) => {
          if (dead) return;
          dead = true;
          this.active.delete(entry);
          const status = { code: grpc.status.UNAVAILABLE, details, metadata: new grpc.Metadata() };
          process.nextTick(() => outer?.onReceiveStatus(status));
          if (started) call.cancelWithStatus(grpc.status.UNAVAILABLE, details);
        },
      };
      const later = (ms: number, fn: () => void) => (ms > 0 ? setTimeout(fn, ms) : fn());
      let sent = Promise.resolve();
      const call: grpc.InterceptingCall = new grpc.InterceptingCall(nextCall(options), {
        start: (metadata, listener, next) => {
          outer = listener;
          metadata.set(FAULT_FROM_HEADER, this.identity());
          const f = this.fate('outbound', peer);
          if (f.fail) return entry.fail(f.fail);
          this.active.add(entry);
          later(f.delayMs, () => {
            if (dead) return;
            started = true;
            next(metadata, {
              onReceiveMessage: (message, pass) => {
                if (dead) return;
                const g = this.fate('inbound', peer);
                if (g.fail) return entry.fail(g.fail);
                later(g.delayMs, () => !dead && pass(message));
              },
              onReceiveStatus: (status, pass) => {
                this.active.delete(entry);
                if (!dead) pass(status);
              },
            });
          });
        },
        sendMessage: (message, next) => {
          if (dead) return;
          const f = this.fate('outbound', peer);
          if (f.fail) return entry.fail(f.fail);
          if (f.delayMs === 0) return next(message);
          sent = new Promise((resolve) =>
            setTimeout(() => {
              if (!dead) next(message);
              resolve();
            }, f.delayMs),
          );
        },
        // The half-close follows the last delayed message, never overtakes it.
        halfClose: (next) => void sent.then(() => !dead && next()),
      });
      return call;
    };
  }

  /** The interceptor for this process's servers. */
  serverInterceptor(): grpc.ServerInterceptor {
    return (method, call) => {
      if (EXEMPT.test(method.path)) return new grpc.ServerInterceptingCall(call);
      let entry: Breakable | undefined;
      let dead = false;
      const fail = (details: string) => {
        if (dead) return;
        dead = true;
        if (entry) this.active.delete(entry);
        // The base call tells the handler it is cancelled, and drops what it sends later.
        call.sendStatus({ code: grpc.status.UNAVAILABLE, details, metadata: new grpc.Metadata() });
      };
      const later = (ms: number, fn: () => void) => (ms > 0 ? setTimeout(fn, ms) : fn());
      return new grpc.ServerInterceptingCall(call, {
        start: (next) =>
          next({
            onReceiveMetadata: (metadata, pass) => {
              const from = parseFrom(metadata.get(FAULT_FROM_HEADER)[0]);
              if (!from) return pass(metadata);
              entry = { peer: from, fail };
              const f = this.fate('inbound', from);
              if (f.fail) return fail(f.fail);
              this.active.add(entry);
              later(f.delayMs, () => !dead && pass(metadata));
            },
            onReceiveMessage: (message, pass) => {
              if (dead) return;
              if (!entry) return pass(message);
              const f = this.fate('inbound', entry.peer);
              if (f.fail) return fail(f.fail);
              later(f.delayMs, () => !dead && pass(message));
            },
            onCancel: () => {
              if (entry) this.active.delete(entry);
            },
          }),
        sendMessage: (message, next) => {
          if (!dead && entry) {
            const f = this.fate('outbound', entry.peer);
            if (f.fail) fail(f.fail);
            else return later(f.delayMs, () => next(message));
          }
          next(message);
        },
        sendStatus: (status, next) => {
          if (entry) this.active.delete(entry);
          if (!dead && entry && this.effect('outbound', entry.peer).cut) {
            this.counters.callsCut++;
            return next({
              ...status,
              code: grpc.status.UNAVAILABLE,
              details: `fault injected: the link ${this.describe('outbound', entry.peer)} is cut`,
            });
          }
          next(status);
        },
      });
    };
  }

  /** FaultService's handlers for this process. */
  handlers(): pb.FaultServiceHandlers {
    return {
      GetFaults: unary(() => this.state()),
      SetLinkFaults: unary((req: pb.SetLinkFaultsRequest__Output) => {
        this.setRules(req.rules);
        return this.state();
      }),
      ClearLinkFaults: unary((req: pb.ClearLinkFaultsRequest__Output) => {
        this.clearRules(req.peers);
        return this.state();
      }),
      Stall: unary((req: pb.StallRequest__Output) => {
        if (req.durationMs < 1 || req.durationMs > MAX_STALL_MS)
          throw invalidArgument('duration_ms', `expected 1 to ${MAX_STALL_MS} ms`);
        this.counters.stalls++;
        // After the answer is on its way: the whole event loop (timers, I/O, the clock the
        // program sees move) stops, as in a long GC pause.
        setTimeout(() => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, req.durationMs), 20);
        return { startsAtMs: Date.now() + 20 };
      }),
      FillStorage: unary((req: pb.FillStorageRequest__Output) => {
        this.setStorageFull(req.full);
        return this.state();
      }),
    };
  }
}

function matches(rule: pb.FaultPeer__Output, peer: PeerId): boolean {
  if (!rule.name && rule.addresses.length === 0) return true;
  if (rule.name && rule.name === peer.name) return true;
  return rule.addresses.some((a) => peer.addresses.includes(a));
}

function parseFrom(value: grpc.MetadataValue | undefined): PeerId | undefined {
  if (typeof value !== 'string' || value.length > 4096) return undefined;
  const [name, ...addresses] = value.split(' ').filter(Boolean);
  return name ? { name, addresses } : undefined;
}

let injector: FaultInjector | undefined;

/**
 * Turns fault injection on for this process, named `name` to its peers. Call it before any
 * channel or server is made: those made earlier carry no fault interceptor.
 */
export function enableFaults(name: string, seed = 1): FaultInjector {
  injector ??= new FaultInjector(name, seed);
  return injector;
}

/** The process's fault injector, when faults are enabled. */
export function faultInjector(): FaultInjector | undefined {
  return injector;
}

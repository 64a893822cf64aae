import { ApiError, status } from '@hyperfarm/api';
import { type SimRng } from '@hyperfarm/raft';
import type { Scope, VirtualClock } from './clock.js';

/** How the links misbehave while faults are on. */
export interface LinkFaults {
  /** Chance that a message (or a call's request or answer) is lost. */
  loss: number;
  /** Extra delay, uniform in [0, jitterMs]: messages overtake each other (reordering). */
  jitterMs: number;
}

export const CALM: LinkFaults = { loss: 0, jitterMs: 0 };

/** Where a process can be reached: the scope of its running incarnation, if it runs. */
export type Endpoint = () => Scope | undefined;

/**
 * The simulated network between daemons, hosts and clients: one-way messages and request/answer
 * calls with deadlines, each way subject to partitions, loss and delay. A crashed process refuses
 * connections (UNAVAILABLE at once); a partitioned one just does not answer (the caller's deadline
 * passes), as on a real network.
 */
export class SimNetwork {
  faults: LinkFaults = CALM;
  /** Base one-way latency, ms. */
  latencyMs = 0.5;
  private readonly endpoints = new Map<string, Endpoint>();
  /** Cut links, as "a|b" with a < b. */
  private readonly cuts = new Set<string>();
  /** Nodes cut from every other node. */
  private readonly isolated = new Set<string>();
  /** Open streams, broken when their link is cut. */
  private readonly streams = new Set<{ a: string; b: string; scope: Scope; broken(): void }>();
  /** Slowed links, one way, as "from>to": extra delay and a share of messages lost (a drill's slow-link). */
  private readonly slow = new Map<string, { delayMs: number; drop: number }>();
  /** How long a stream over a cut link takes to notice (gRPC keepalive). */
  streamBreakMs = 10_000;
  messages = 0;
  dropped = 0;

  constructor(
    private readonly clock: VirtualClock,
    private readonly rng: SimRng,
  ) {}

  register(name: string, endpoint: Endpoint): void {
    this.endpoints.set(name, endpoint);
  }

  cut(a: string, b: string): void {
    this.cuts.add(a < b ? `${a}|${b}` : `${b}|${a}`);
    this.breakStreams();
  }

  isolate(node: string): void {
    this.isolated.add(node);
    this.breakStreams();
  }

  /** A stream between `a` and `b` owned by `scope`: `broken` runs when a cut breaks it. */
  openStream(a: string, b: string, scope: Scope, broken: () => void): () => void {
    const s = { a, b, scope, broken };
    this.streams.add(s);
    return () => this.streams.delete(s);
  }

  private breakStreams(): void {
    for (const s of this.streams) {
      if (this.connected(s.a, s.b)) continue;
      this.streams.delete(s);
      s.scope.set(s.broken, this.streamBreakMs);
    }
  }

  heal(): void {
    this.cuts.clear();
    this.isolated.clear();
    this.slow.clear();
  }

  /** Messages from `from` to `to` wait `delayMs` more, and `drop` of them are lost, until the heal. */
  slowLink(from: string, to: string, delayMs: number, drop: number): void {
    this.slow.set(`${from}>${to}`, { delayMs, drop });
  }

  /** The one-way delay of the next message from `from` to `to`. */
  private delayOn(from: string, to: string): number {
    return this.delay() + (this.slow.size ? (this.slow.get(`${from}>${to}`)?.delayMs ?? 0) : 0);
  }

  private lostOn(from: string, to: string): boolean {
    const drop = this.slow.size ? (this.slow.get(`${from}>${to}`)?.drop ?? 0) : 0;
    return this.lost() || (drop > 0 && this.rng.chance(drop));
  }

  connected(a: string, b: string): boolean {
    if (this.isolated.has(a) || this.isolated.has(b)) return false;
    return !this.cuts.has(a < b ? `${a}|${b}` : `${b}|${a}`);
  }

  get partitioned(): boolean {
    return this.cuts.size > 0 || this.isolated.size > 0;
  }

  /** One-way delay of the next message. */
  delay(): number {
    const j = this.faults.jitterMs;
    return this.latencyMs + (j > 0 ? this.rng.next() * j : 0);
  }

  private lost(): boolean {
    return this.faults.loss > 0 && this.rng.chance(this.faults.loss);
  }

  /** Sends a one-way message; it runs at the receiver (if up, reachable and not lost) later. */
  send(from: string, to: string, fn: () => void): void {
    this.messages++;
    if (!this.connected(from, to) || this.lostOn(from, to)) {
      this.dropped++;
      return;
    }
    const scope = this.endpoints.get(to)?.();
    if (!scope) {
      this.dropped++;
      return;
    }
    scope.set(
      () => {
        // Still the same incarnation, still reachable when it lands.
        if (this.endpoints.get(to)?.() === scope && this.connected(from, to)) fn();
      },
      this.delayOn(from, to),
    );
  }

  /**
   * A call from `caller` (running in `callerScope`) to `to`: `fn` runs at the receiver and its
   * answer (or error) travels back. Fails with UNAVAILABLE when the receiver is down, with
   * DEADLINE_EXCEEDED when nothing came back in time (the request may still have run).
   */
  call<T>(
    callerScope: Scope,
    caller: string,
    to: string,
    deadlineMs: number,
    fn: () => Promise<T> | T,
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      let forgetLink = (): void => undefined;
      const settle = (f: () => void) => {
        if (settled) return;
        settled = true;
        callerScope.clear(timer);
        forgetLink();
        f();
      };
      const timer = callerScope.set(
        () =>
          settle(() =>
            reject(new ApiError(status.DEADLINE_EXCEEDED, `no answer from ${to} in ${deadlineMs} ms`)),
          ),
        deadlineMs,
      );
      this.messages++;
      // No route: the connection attempt times out, as gRPC's does, unless the deadline comes first.
      const unreachable = () =>
        settle(() => reject(new ApiError(status.UNAVAILABLE, `no connection to ${to}: it does not answer`)));
      if (!this.connected(caller, to)) {
        this.dropped++;
        callerScope.set(unreachable, this.streamBreakMs);
        return;
      }
      // A link cut while the call waits: keepalive pings go unanswered and the call fails.
      forgetLink = this.openStream(caller, to, callerScope, unreachable);
      // A call rides a TCP connection: a lost packet is sent again, so loss here is the
      // connection breaking (UNAVAILABLE), not a request that silently vanishes.
      const reset = () =>
        callerScope.set(
          () => settle(() => reject(new ApiError(status.UNAVAILABLE, `the connection to ${to} broke`))),
          2 * this.delay(),
        );
      if (this.lostOn(caller, to)) {
        this.dropped++;
        reset();
        return;
      }
      const target = this.endpoints.get(to)?.();
      if (!target) {
        callerScope.set(
          () => settle(() => reject(new ApiError(status.UNAVAILABLE, `connection refused by ${to}`))),
          2 * this.delay(),
        );
        return;
      }
      const answer = (f: () => void) => {
        this.messages++;
        if (!this.connected(caller, to)) {
          this.dropped++;
          return;
        }
        if (this.lostOn(to, caller)) {
          this.dropped++;
          reset();
          return;
        }
        callerScope.set(() => settle(f), this.delayOn(to, caller));
      };
      // The receiver dying with the call in flight resets the connection: UNAVAILABLE.
      const forget = target.onKill(() =>
        answer(() => reject(new ApiError(status.UNAVAILABLE, `the connection to ${to} was reset`))),
      );
      target.set(
        () => {
          if (this.endpoints.get(to)?.() !== target) return;
          Promise.resolve()
            .then(fn)
            .then(
              (v) => {
                forget();
                if (this.endpoints.get(to)?.() === target) answer(() => resolve(v));
              },
              (err: unknown) => {
                forget();
                if (this.endpoints.get(to)?.() === target) answer(() => reject(err));
              },
            );
        },
        this.delayOn(caller, to),
      );
    });
  }
}

import { CallError, CONNECTION_LOST } from './errors.js';
import type {
  ClientMessage,
  ConsoleEndpoint,
  DrillList,
  DrillReport,
  FarmEvent,
  ServerMessage,
  WireError,
} from './wire.js';

export interface ConnectionState {
  status: 'connecting' | 'open' | 'reconnecting';
  /** The daemon answering, once it said hello. */
  daemonId: string;
  /** The WebSocket URL in use or being tried. */
  url: string;
  /** Failed attempts since the last open socket. */
  attempts: number;
  /** Why the last socket closed or the watch failed, in words. */
  problem: string;
  /** Every daemon's console, as the last hello or listing said. */
  consoles: ConsoleEndpoint[];
}

export interface ConnectionHooks {
  /** Each event of the Watch stream, in revision order. */
  event(e: FarmEvent): void;
  /** The revision to resume from: the last one the page applied. */
  revision(): number;
  /** The stream cannot resume (its revision is no longer kept): start again from the state. */
  reset(): void;
  state(s: ConnectionState): void;
}

const CALL_TIMEOUT_MS = 70_000;
const MAX_BACKOFF_MS = 2_000;
/** How often the list of consoles is asked again (daemons join and leave). */
const CONSOLES_MS = 15_000;

interface Pending {
  resolve(value: unknown): void;
  reject(err: CallError): void;
  timer: ReturnType<typeof setTimeout>;
}

const toWs = (http: string) => `${http.replace(/^http/, 'ws')}/ws`;

/**
 * The page's one connection to the farm: a WebSocket to a daemon's gateway. When it closes, it
 * tries each daemon's console in turn (the daemons named by the last hello) and resumes the
 * event stream from the page's last revision, so the page never reloads.
 */
export class Connection {
  private ws: WebSocket | undefined;
  private readonly pending = new Map<number, Pending>();
  private seq = 0;
  private candidates: string[];
  private next = 0;
  private closed = false;
  private retry: ReturnType<typeof setTimeout> | undefined;
  private consolesTimer: ReturnType<typeof setTimeout> | undefined;
  private s: ConnectionState;

  constructor(
    first: string,
    private readonly hooks: ConnectionHooks,
  ) {
    this.candidates = [first];
    this.s = { status: 'connecting', daemonId: '', url: first, attempts: 0, problem: '', consoles: [] };
    this.open(first);
  }

  get state(): ConnectionState {
    return this.s;
  }

  /** Calls a ClusterService method on the daemon; rejects with a CallError. */
  call<T>(method: string, request: object = {}): Promise<T> {
    return this.ask<T>({ type: 'call', method, request }, method);
  }

  /** The drill reports in the daemon's reports folder (answered by its gateway from files). */
  drills(): Promise<DrillList> {
    return this.ask<DrillList>({ type: 'drills' }, 'Listing the drill reports');
  }

  /** One drill report, by its folder's path as `drills` listed it. */
  drill(path: string): Promise<DrillReport> {
    return this.ask<{ report: DrillReport }>(
      { type: 'drill', path },
      `Reading the drill report ${path}`,
    ).then((m) => m.report);
  }

  private ask<T>(message: DistributiveOmit<ClientMessage & { id: number }, 'id'>, what: string): Promise<T> {
    const method = what;
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN)
      return Promise.reject(
        lost(`not connected to a daemon (${this.s.problem || 'connecting'}): nothing was sent`),
      );
    const id = ++this.seq;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(
          new CallError({
            code: 4,
            codeName: 'DEADLINE_EXCEEDED',
            message: `${method} had no answer within ${CALL_TIMEOUT_MS / 1000} s`,
          }),
        );
      }, CALL_TIMEOUT_MS);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      this.send({ ...message, id } as ClientMessage);
    });
  }

  /** Drops the socket and tries the next daemon, as if this one had died. */
  dropSocket(): void {
    this.ws?.close();
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.retry);
    this.ws?.close();
  }

  private update(patch: Partial<ConnectionState>): void {
    this.s = { ...this.s, ...patch };
    this.hooks.state(this.s);
  }

  private send(m: ClientMessage): void {
    this.ws?.send(JSON.stringify(m));
  }

  private open(url: string): void {
    const ws = new WebSocket(url);
    this.ws = ws;
    this.update({ url, status: this.s.attempts === 0 && !this.s.daemonId ? 'connecting' : 'reconnecting' });
    ws.onopen = () => {
      this.update({ status: 'open', attempts: 0, problem: '' });
      this.send({ type: 'watch', fromRevision: this.hooks.revision() });
      this.askConsoles();
    };
    ws.onmessage = (m) => this.receive(JSON.parse(String(m.data)) as ServerMessage);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = undefined;
      const who = this.s.daemonId || url;
      for (const [id, p] of this.pending) {
        clearTimeout(p.timer);
        p.reject(
          lost(
            `the connection to ${who} closed before it answered: check whether the change happened before trying again`,
          ),
        );
        this.pending.delete(id);
      }
      if (this.closed) return;
      const attempts = this.s.attempts + 1;
      this.update({
        status: 'reconnecting',
        attempts,
        daemonId: '',
        problem: `lost the connection to ${who}; trying the other daemons`,
      });
      const wait = Math.min(MAX_BACKOFF_MS, 100 * 2 ** Math.min(attempts, 5));
      this.retry = setTimeout(() => this.open(this.pick(url)), wait);
    };
  }

  /** Asks for every daemon's console now, and every so often while the socket is open. */
  private askConsoles(): void {
    clearTimeout(this.consolesTimer);
    if (this.ws?.readyState !== WebSocket.OPEN) return;
    this.send({ type: 'consoles', id: ++this.seq });
    this.consolesTimer = setTimeout(() => this.askConsoles(), CONSOLES_MS);
  }

  /** The next daemon's console after `failed`, going round the list. */
  private pick(failed: string): string {
    const list = this.candidates.length > 1 ? this.candidates.filter((c) => c !== failed) : this.candidates;
    const url = list[this.next % list.length]!;
    this.next++;
    return url;
  }

  private receive(m: ServerMessage): void {
    switch (m.type) {
      case 'hello':
      case 'consoles':
        if (m.type === 'hello') this.update({ daemonId: m.daemonId });
        if (m.consoles.length > 0) {
          this.candidates = m.consoles.map((c) => toWs(c.address));
          this.update({ consoles: m.consoles });
        }
        return;
      case 'event':
        this.hooks.event(m.event);
        return;
      case 'events':
        for (const e of m.events) this.hooks.event(e);
        return;
      case 'resync':
        // The gateway stopped sending because this page fell behind: everything it queued has
        // arrived by now, so resume from what the page has.
        this.send({ type: 'watch', fromRevision: this.hooks.revision() });
        return;
      case 'watchError':
        return this.watchFailed(m.error);
      case 'result':
        return this.settle(m.id, m.response);
      case 'drills':
      case 'drill':
        return this.settle(m.id, m);
      case 'error':
        if (m.id === undefined) {
          this.update({ problem: m.error.message });
          return;
        }
        return this.settle(m.id, undefined, m.error);
    }
  }

  private watchFailed(error: WireError): void {
    if (error.codeName === 'OUT_OF_RANGE') {
      // The daemon no longer keeps our revision: start again from the current state.
      this.hooks.reset();
      this.send({ type: 'watch', fromRevision: 0 });
      return;
    }
    this.update({ problem: `the event stream stopped: ${error.message}; resuming` });
    setTimeout(() => {
      if (this.ws?.readyState === WebSocket.OPEN)
        this.send({ type: 'watch', fromRevision: this.hooks.revision() });
    }, 1_000);
  }

  private settle(id: number, value: unknown, error?: WireError): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    if (error) p.reject(new CallError(error));
    else p.resolve(value);
  }
}

const lost = (message: string) => new CallError({ code: CONNECTION_LOST, codeName: 'UNAVAILABLE', message });

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

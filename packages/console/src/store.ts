import { Connection, type ConnectionState } from './connection.js';
import { mergeLive, type HostLive } from './live.js';
import { applyEvent, emptyModel, type FarmModel } from './model.js';
import type { Notice } from './notices.js';
import type { FarmEvent, Host, ListHostsResponse, Operation } from './wire.js';

const NOTICE_LIMIT = 6;
const RENDERS_KEPT = 2_000;
/** How often the hosts' live figures are asked for while connected. */
const LIVE_MS = 2_000;

/**
 * The page's state: the farm model fed by the connection's events, and who to tell when it
 * changes. Views re-render at most once per animation frame however fast events come, which is
 * what keeps a page with a thousand VMs level with the stream.
 */
export class Store {
  model: FarmModel = emptyModel();
  connection: ConnectionState;
  /** Grows with every change; views compare it to know they are stale. */
  version = 0;
  /** When the last applied event was committed, and when it was applied here (ms). */
  lastEvent = { timeMs: 0, appliedAt: 0, revision: 0 };
  /**
   * When the farm view showed each revision (Date.now() ms), newest last and at most
   * RENDERS_KEPT: how `npm run bench:console` measures how far the view lags behind the stream.
   */
  readonly renders: { revision: number; at: number }[] = [];
  /**
   * When each revision reached the page (Date.now() ms), at most RENDERS_KEPT: with `renders`,
   * splits the benchmark's lag into the way here (daemon, gateway, socket) and the page's own.
   */
  readonly arrivals: { revision: number; at: number }[] = [];
  /** Each host's CPU and last heartbeat, by id: not in the event stream (see HostLive). */
  live: ReadonlyMap<string, HostLive> = new Map();
  /** What the person asked for lately, newest first, each followed to its end. */
  notices: Notice[] = [];
  readonly conn: Connection;
  private noticeSeq = 0;
  private readonly listeners = new Set<() => void>();
  private scheduled = false;

  constructor(url: string) {
    this.connection = {
      status: 'connecting',
      daemonId: '',
      url,
      attempts: 0,
      problem: '',
      consoles: [],
    };
    this.conn = new Connection(url, {
      event: (e) => this.apply(e),
      revision: () => this.model.revision,
      reset: () => {
        this.model = emptyModel();
        this.changed();
      },
      state: (s) => {
        this.connection = s;
        this.changed();
      },
    });
    void this.pollLive();
  }

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Runs a call that starts an operation and keeps a notice of it: the call's error, or the
   * operation, which the event stream then follows to its end. Resolves with the answer.
   */
  async act<T extends object>(label: string, call: () => Promise<T>): Promise<T | undefined> {
    const notice: Notice = { key: ++this.noticeSeq, label };
    this.notices = [notice, ...this.notices].slice(0, NOTICE_LIMIT);
    this.changed();
    try {
      const result = await call();
      // Calls that start an operation answer it; the others (a rename) are done when answered.
      if (isOperation(result)) this.patchNotice(notice.key, { operationId: result.id, operation: result });
      else this.patchNotice(notice.key, { answered: true });
      return result;
    } catch (error) {
      this.patchNotice(notice.key, { error });
      return undefined;
    }
  }

  /** Asks every host's live figures (ListHosts, every page), and again every LIVE_MS. */
  private async pollLive(): Promise<void> {
    try {
      if (this.connection.status === 'open') {
        const hosts: Host[] = [];
        let pageToken = '';
        do {
          const page = await this.conn.call<ListHostsResponse>('ListHosts', {
            consistency: 'CONSISTENCY_STALE',
            pageSize: 1000,
            pageToken,
          });
          hosts.push(...page.hosts);
          pageToken = page.nextPageToken;
        } while (pageToken);
        const next = mergeLive(this.live, hosts);
        if (next !== this.live) {
          this.live = next;
          this.changed();
        }
      }
    } catch {
      // The next round asks again; a lost connection shows in the banner already.
    } finally {
      setTimeout(() => void this.pollLive(), LIVE_MS);
    }
  }

  /** The farm view calls this once its DOM shows the model's revision. */
  rendered(): void {
    const last = this.renders[this.renders.length - 1];
    if (last?.revision === this.model.revision) return;
    this.renders.push({ revision: this.model.revision, at: Date.now() });
    if (this.renders.length > RENDERS_KEPT) this.renders.splice(0, this.renders.length - RENDERS_KEPT);
  }

  dismiss(key: number): void {
    this.notices = this.notices.filter((n) => n.key !== key);
    this.changed();
  }

  private patchNotice(key: number, patch: Partial<Notice>): void {
    this.notices = this.notices.map((n) => (n.key === key ? { ...n, ...patch } : n));
    this.changed();
  }

  private apply(e: FarmEvent): void {
    if (!applyEvent(this.model, e)) return;
    const now = Date.now();
    this.lastEvent = { timeMs: e.timeMs, appliedAt: now, revision: e.revision };
    this.arrivals.push({ revision: e.revision, at: now });
    if (this.arrivals.length > RENDERS_KEPT) this.arrivals.splice(0, this.arrivals.length - RENDERS_KEPT);
    this.changed();
  }

  private changed(): void {
    this.version++;
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      for (const l of this.listeners) l();
    });
  }
}

const isOperation = (x: object): x is Operation => 'done' in x && 'targetId' in x;

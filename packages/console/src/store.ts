import { Connection, type ConnectionState } from './connection.js';
import { applyEvent, emptyModel, type FarmModel } from './model.js';
import type { FarmEvent } from './wire.js';

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
  readonly conn: Connection;
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
  }

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private apply(e: FarmEvent): void {
    if (!applyEvent(this.model, e)) return;
    this.lastEvent = { timeMs: e.timeMs, appliedAt: Date.now(), revision: e.revision };
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

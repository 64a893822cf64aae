import { decodeFrame, encodeFrame } from './codec.js';
import type { Frame } from './frame.js';
import { HostNetwork } from './host-network.js';
import type { GuestInfo } from './stack.js';

// Several hosts' networks on one virtual clock, joined by simulated tunnels with a fixed
// latency: the harness for tests and benchmarks. Events across hosts happen in time order, so a
// run is the same every time. A killed host stops at once: no more timers, no more frames.

export interface NetworkSimOptions {
  /** One-way tunnel latency in milliseconds. */
  latencyMs?: number;
  seed?: number;
  /** A guest's service time and workers; 2 ms and 2 by default. */
  guest?: (hostId: string, vmId: string) => GuestInfo;
  /** Carry frames between hosts as the tunnels do, encoded and decoded again. */
  encode?: boolean;
}

interface InFlight {
  at: number;
  from: string;
  to: string;
  switchName: string;
  frame: Frame;
}

export class NetworkSim {
  readonly hosts = new Map<string, HostNetwork>();
  private readonly down = new Set<string>();
  private inFlight: InFlight[] = [];
  private head = 0;
  nowMs = 0;
  readonly latencyMs: number;
  /** Frames carried between hosts so far. */
  tunnelFrames = 0;

  constructor(private readonly opts: NetworkSimOptions = {}) {
    this.latencyMs = opts.latencyMs ?? 0.1;
  }

  addHost(id: string): HostNetwork {
    const host = new HostNetwork({
      hostId: id,
      seed: this.opts.seed ?? 1,
      startMs: this.nowMs,
      guest: (vmId) => this.opts.guest?.(id, vmId) ?? { serviceTimeMs: 2, workers: 2 },
    });
    this.hosts.set(id, host);
    this.down.delete(id);
    const ids = [...this.hosts.keys()];
    for (const h of this.hosts.values()) h.setPeers(ids);
    return host;
  }

  host(id: string): HostNetwork {
    const h = this.hosts.get(id);
    if (!h) throw new Error(`no host ${id}`);
    return h;
  }

  /** The host fails: it sends and receives nothing from now on. */
  kill(id: string): void {
    this.down.add(id);
  }

  isDown(id: string): boolean {
    return this.down.has(id);
  }

  advance(toMs: number): void {
    // What the hosts were given between runs leaves now, not at the end of this run.
    this.step(this.nowMs);
    for (;;) {
      const t = this.nextEvent();
      if (t === undefined || t > toMs) break;
      this.step(t);
    }
    this.step(toMs);
  }

  run(ms: number): void {
    this.advance(this.nowMs + ms);
  }

  /** Runs until `done()` holds, checking after every event; false if `maxMs` passes first. */
  runUntil(done: () => boolean, maxMs: number): boolean {
    const limit = this.nowMs + maxMs;
    this.step(this.nowMs);
    while (!done()) {
      const t = this.nextEvent();
      if (t === undefined || t > limit) {
        this.step(limit);
        return done();
      }
      this.step(t);
    }
    return true;
  }

  private nextEvent(): number | undefined {
    let t: number | undefined = this.inFlight[this.head]?.at;
    for (const [id, h] of this.hosts) {
      if (this.down.has(id)) continue;
      const d = h.nextDeadline();
      if (d !== undefined && (t === undefined || d < t)) t = d;
    }
    return t;
  }

  private step(t: number): void {
    if (t > this.nowMs) this.nowMs = t;
    for (;;) {
      for (const [id, h] of this.hosts) if (!this.down.has(id)) h.advance(this.nowMs);
      let moved = this.collect();
      while (this.head < this.inFlight.length && this.inFlight[this.head]!.at <= this.nowMs) {
        const f = this.inFlight[this.head++]!;
        if (this.down.has(f.to) || this.down.has(f.from)) continue;
        this.hosts.get(f.to)?.receiveFromPeer(f.from, f.switchName, f.frame);
        moved = true;
      }
      if (this.head > 1024 && this.head * 2 > this.inFlight.length) {
        this.inFlight = this.inFlight.slice(this.head);
        this.head = 0;
      }
      if (!moved) return;
    }
  }

  private collect(): boolean {
    let any = false;
    for (const [id, h] of this.hosts) {
      const out = h.takeOutbound();
      if (this.down.has(id)) continue;
      for (const o of out) {
        const frame = this.opts.encode ? decodeFrame(encodeFrame(o.frame)) : o.frame;
        if (!frame) throw new Error(`a frame did not survive its encoding: ${JSON.stringify(o.frame)}`);
        this.inFlight.push({
          at: this.nowMs + this.latencyMs,
          from: id,
          to: o.peer,
          switchName: o.switchName,
          frame,
        });
        this.tunnelFrames++;
        any = true;
      }
    }
    return any;
  }
}

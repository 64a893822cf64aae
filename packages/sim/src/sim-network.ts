import { createLogger, type pb } from '@hyperfarm/api';
import {
  AgentNetwork,
  decodeFrame,
  encodeFrame,
  networkServiceImpl,
  type Frame,
  type FrameLinks,
  type HypervisorEngine,
  type NetworkHostPort,
} from '@hyperfarm/agent';
import type { Scope } from './clock.js';
import type { SimNetwork } from './network.js';
import { overWire, wireMethod } from './wire.js';

/** The receiving side of the host's network: frames in, and frames that could not leave. */
interface Ends {
  deliver(peer: string, switchName: string, frames: Frame[]): void;
  dropped(peer: string, switchName: string, count: number): void;
}

/**
 * The tunnels between simulated hosts: each frame, encoded as the agents' tunnels encode it, is
 * a message on the simulated network between the two hosts, so it takes the link's delay, may be
 * lost or reordered, and does not cross a partition or reach a host that is down.
 */
export class SimTunnels implements FrameLinks {
  private peers = new Set<string>();
  private closed = false;

  constructor(
    private readonly hostId: string,
    private readonly net: SimNetwork,
    private readonly peerNetwork: (hostId: string) => SimAgentNetwork | undefined,
    private readonly ends: Ends,
  ) {}

  setPeers(peers: { hostId: string; address: string }[]): void {
    this.peers = new Set(peers.map((p) => p.hostId).filter((id) => id !== this.hostId));
  }

  send(peer: string, switchName: string, frame: Frame): void {
    if (this.closed || !this.peers.has(peer)) {
      this.ends.dropped(peer, switchName, 1);
      return;
    }
    const bytes = encodeFrame(frame);
    this.net.send(this.hostId, peer, () => {
      const f = decodeFrame(bytes);
      // The codec is the agents' own: a frame it cannot read back is a bug to see, not a loss.
      if (!f) throw new Error(`a frame did not survive its encoding: ${JSON.stringify(frame)}`);
      this.peerNetwork(peer)?.tunnels.receive(this.hostId, switchName, f);
    });
  }

  /** A frame from `peer` arrived: the receiving end takes only its configured peers' frames. */
  receive(peer: string, switchName: string, frame: Frame): void {
    if (this.closed || !this.peers.has(peer)) return;
    this.ends.deliver(peer, switchName, [frame]);
  }

  close(): void {
    this.closed = true;
    this.peers.clear();
  }
}

export type SimAgentNetwork = AgentNetwork<SimTunnels>;

type Handler = (call: { request: unknown }, cb: (err: unknown, value?: unknown) => void) => void;

const silent = createLogger({ program: 'sim', id: 'network', level: 'silent' });

/**
 * One simulated host's network, as the agent wires it (packages/agent/src/server.ts): the real
 * AgentNetwork beside the host's engine, on the host incarnation's virtual timers, its tunnels
 * over the simulated network, and the agent's own NetworkService handlers to answer the daemon.
 */
export function startHostNetwork(o: {
  hostId: string;
  scope: Scope;
  net: SimNetwork;
  read<T>(fn: (engine: HypervisorEngine) => T): T;
  onEvent(listener: (event: pb.AgentEvent) => void): () => void;
  peerNetwork(hostId: string): SimAgentNetwork | undefined;
}): { network: SimAgentNetwork; call(method: string, req: unknown): Promise<unknown> } {
  const { scope } = o;
  const port: NetworkHostPort = {
    settings: { id: o.hostId },
    logger: silent,
    now: () => scope.now(),
    read: (fn) => o.read(fn),
    onEvent: (l) => o.onEvent(l),
  };
  const network = new AgentNetwork<SimTunnels>(port, undefined, {
    timers: {
      set: (fn, ms) => scope.set(fn, ms),
      clear: (h) => scope.clear(h),
      soon: (fn) => void scope.set(fn, 0),
    },
    links: (ends) => new SimTunnels(o.hostId, o.net, o.peerNetwork, ends),
  });
  const handlers = networkServiceImpl(network) as unknown as Record<string, Handler>;
  return {
    network,
    /** A NetworkService call as it arrives over gRPC, answered by the agent's handler. */
    call: (method, req) => {
      const { name, def } = wireMethod('NetworkService', method);
      return new Promise((resolve, reject) =>
        handlers[name]!({ request: overWire.request(def, req) }, (err, value) =>
          err ? reject(err) : resolve(overWire.response(def, value)),
        ),
      );
    },
  };
}

import type { Logger } from '@hyperfarm/api';
import type { RaftNode } from '@hyperfarm/raft';
import type { HostLiveView } from '../fsm/index.js';
import type { ClusterClients } from './service-clients.js';
import { realTimers, type Timers } from './timers.js';

/** A host's live view (last heartbeat, CPU), undefined when none is known. */
export type LiveLookup = (hostId: string) => HostLiveView | undefined;

/** A follower asks the leader again at most this often, and only while reads ask. */
export const REFRESH_MS = 1_000;
/**
 * A view older than this (none yet, or no read for a while) is not answered as it is: the read
 * waits for the refresh it starts, so a follower does not answer zeros for a busy farm.
 */
const COLD_MS = 5_000;
/** One refresh, every page of it, ends within this. */
const DEADLINE_MS = 2_000;
const PAGE = 1_000;

/**
 * The hosts' live usage for host reads on any daemon. Only the leader knows it (its lease grants'
 * answers), and it is deliberately not committed: it changes every heartbeat. The leader answers
 * from its controllers; a follower from a copy of the leader's view, fetched by ListHosts
 * (STALE) from the leader, so it lags by up to REFRESH_MS and a call.
 */
export class LiveHosts {
  private views = new Map<string, HostLiveView>();
  private fetchedAt = -Infinity;
  private refreshing: Promise<void> | undefined;

  constructor(
    private readonly raft: Pick<RaftNode, 'status'>,
    private readonly local: LiveLookup,
    private readonly clients: Pick<ClusterClients, 'of'>,
    private readonly logger: Logger,
    private readonly timers: Pick<Timers, 'now'> = realTimers,
  ) {}

  async lookup(): Promise<LiveLookup> {
    const { id, leader, addresses } = this.raft.status();
    if (leader === id) return this.local;
    const age = this.timers.now() - this.fetchedAt;
    const address = addresses[leader];
    if (age >= REFRESH_MS && !this.refreshing && leader && address) {
      this.refreshing = this.refresh(leader, address).finally(() => {
        this.refreshing = undefined;
      });
    }
    if (age > COLD_MS && this.refreshing) await this.refreshing;
    const views = this.views;
    return (hostId) => views.get(hostId);
  }

  private async refresh(leader: string, address: string): Promise<void> {
    const client = this.clients.of(address);
    const deadline = this.timers.now() + DEADLINE_MS;
    const views = new Map<string, HostLiveView>();
    try {
      let pageToken = '';
      do {
        const page = await client.listHosts(
          { consistency: 'CONSISTENCY_STALE', pageSize: PAGE, pageToken },
          { timeoutMs: Math.max(1, deadline - this.timers.now()) },
        );
        for (const h of page.hosts)
          views.set(h.id, { lastHeartbeatMs: h.lastHeartbeatMs, cpuPercent: h.usage?.cpuPercent ?? 0 });
        pageToken = page.nextPageToken;
      } while (pageToken);
      this.views = views;
    } catch (err) {
      // The last view stays: its heartbeat times say how old it is.
      this.logger.debug({ err, leader, address }, 'could not read the hosts live usage from the leader');
    } finally {
      this.fetchedAt = this.timers.now();
    }
  }
}

/** The live lookup for a read: the daemon's LiveHosts, or the local controllers' (the simulator). */
export function liveLookup(ctx: {
  liveHosts?: LiveHosts;
  runner: { live: LiveLookup };
}): Promise<LiveLookup> {
  return ctx.liveHosts?.lookup() ?? Promise.resolve((id) => ctx.runner.live(id));
}

import { status, statusOf, type pb } from '@hyperfarm/api';
import type { Scope } from './clock.js';
import { overWire, wireMethod } from './wire.js';

/** Members the farm's cluster takes at most (Windows NLB's limit is 32). */
const MAX_MEMBERS = 8;
const SWITCH = 'ext';
const VIP = '10.0.0.100';

/**
 * The network part of `sim:farm --network`'s workload: an External switch, one NLB cluster that
 * the first VMs created join (up to 8), every VM with an adapter on the switch, and clients
 * at the cluster's address for the whole run. The faults then crash, cut off and migrate its
 * members, and the NLB invariants are checked after every step.
 */
export class FarmNlb {
  private clusterId: string | undefined;
  /** Members joined, and priorities handed out (a refused join leaves its priority unused). */
  private members = 0;
  private priorities = 0;
  private setUp = false;

  constructor(
    private readonly client: Scope,
    private readonly request: <T>(method: string, req: unknown) => Promise<T>,
    private readonly log: (line: string) => void,
    private readonly trafficMs: number,
  ) {}

  /** A ClusterService network call, its request and answer as gRPC carries them. */
  private async call<T>(method: string, req: unknown): Promise<T> {
    const { def } = wireMethod('ClusterService', method);
    return overWire.response(def, await this.request(method, overWire.request(def, req))) as T;
  }

  /** Until it succeeds, a second apart; or, with `onlyRetryable`, until the farm refuses it. */
  private retry<T>(what: string, fn: () => Promise<T>, then: (v: T) => void, onlyRetryable = false): void {
    fn().then(then, (err: unknown) => {
      this.log(`client: ${what} failed: ${(err as Error).message}`);
      const code = statusOf(err);
      const retryable =
        code === status.UNAVAILABLE || code === status.DEADLINE_EXCEEDED || code === undefined;
      if (!onlyRetryable || retryable)
        this.client.set(() => this.retry(what, fn, then, onlyRetryable), 1_000);
    });
  }

  /** The switch, the cluster and the traffic, once the hosts are registered. */
  start(): void {
    if (this.setUp) return;
    this.setUp = true;
    this.retry(
      'create switch',
      () => this.call('CreateSwitch', { name: SWITCH, type: 'SWITCH_TYPE_EXTERNAL' }),
      () =>
        this.retry(
          'create NLB cluster',
          () =>
            this.call<pb.NlbCluster__Output>('CreateNlbCluster', {
              name: 'web',
              virtualIp: VIP,
              mode: 'NLB_MODE_UNICAST',
              switchName: SWITCH,
              heartbeatPeriodMs: 100,
            }),
          (c) => {
            this.clusterId = c.id;
            this.log(`client: NLB cluster ${c.id} created`);
            this.retry(
              'start traffic',
              () =>
                this.call('StartTraffic', {
                  traffic: {
                    id: 'clients',
                    switchName: SWITCH,
                    virtualIp: VIP,
                    ratePerSecond: 20,
                    durationMs: this.trafficMs,
                  },
                }),
              () => this.log('client: traffic started'),
            );
          },
        ),
    );
  }

  /** The adapter of the workload's VM number `n`: a static MAC of its own, an address in the cluster's network. */
  adapter(n: number): pb.NetworkAdapter {
    const hex = (x: number) => x.toString(16).padStart(2, '0').toUpperCase();
    return {
      kind: 'NIC_KIND_SYNTHETIC',
      staticMac: true,
      macAddress: `00-15-5D-AC-${hex((n >> 8) & 255)}-${hex(n & 255)}`,
      switchName: SWITCH,
      // 10.1.0.0 and up, in the virtual IP's network (10.0.0.0/8), never the virtual IP itself.
      ipv4Address: `10.${1 + ((n >> 16) & 127)}.${(n >> 8) & 255}.${n & 255}/8`,
    };
  }

  /**
   * A VM whose create was acknowledged joins the cluster, while it has room. The farm refuses a
   * second member on a host (Windows NLB has one per host): that VM stays out.
   */
  created(vmId: string): void {
    if (!this.clusterId || this.members >= MAX_MEMBERS || this.priorities >= 32) return;
    const priority = ++this.priorities;
    const clusterId = this.clusterId;
    this.retry(
      `add NLB member ${vmId}`,
      () => this.call('AddNlbMember', { clusterId, member: { vmId, hostPriority: priority } }),
      () => {
        this.members++;
        this.log(`client: ${vmId} joined the NLB cluster as priority ${priority}`);
      },
      true,
    );
  }
}

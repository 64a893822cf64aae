import { expect } from 'chai';
import { statusOf, status } from '@hyperfarm/api';
import { Role } from '@hyperfarm/raft';
import { FarmSimulation, SMALL } from '../src/farm.js';
import type { SimDaemon } from '../src/replica.js';
import { overWire, wireMethod } from '../src/wire.js';

// The daemons' network API in the simulator: a call to a follower right after a write the
// leader acknowledged sees that write, as every other mutating ClusterService call does.

type Handler = (call: { request: unknown }, cb: (err: unknown, value?: unknown) => void) => void;

/** Runs the farm's clock, one callback and its promises at a time, until `done` or `maxMs`. */
async function runUntil(farm: FarmSimulation, done: () => boolean, maxMs: number): Promise<void> {
  const end = farm.clock.now + maxMs;
  while (!done() && farm.clock.now < end) {
    const ev = farm.clock.pop();
    if (!ev) break;
    ev.fn();
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
  }
}

/** A ClusterService call to this daemon's handler, its request as gRPC delivers it. */
function call<T>(d: SimDaemon, method: string, req: unknown): { settled: boolean; result: Promise<T> } {
  const { def } = wireMethod('ClusterService', method);
  const out = { settled: false, result: undefined as unknown as Promise<T> };
  out.result = new Promise<T>((resolve, reject) =>
    (d.handlers as Record<string, Handler>)[method]!({ request: overWire.request(def, req) }, (err, v) =>
      err ? reject(err) : resolve(v as T),
    ),
  ).finally(() => (out.settled = true));
  out.result.catch(() => undefined);
  return out;
}

async function settle<T>(farm: FarmSimulation, c: { settled: boolean; result: Promise<T> }): Promise<T> {
  await runUntil(farm, () => c.settled, 30_000);
  return c.result;
}

describe("the daemons' network API in the simulator", function () {
  this.timeout(60_000);

  it('a follower that has not applied a new NLB cluster yet still finds it (reads after a barrier, not its stale state)', async () => {
    const farm = new FarmSimulation({
      ...SMALL,
      seed: 1,
      hosts: 2,
      vms: 0,
      faults: false,
      converge: false,
      moves: false,
      network: true,
    });
    try {
      const leader = () => [...farm.daemons.values()].find((d) => d.serving && d.role === Role.Leader);
      await runUntil(farm, () => leader() !== undefined, 30_000);
      const l = leader()!;
      const follower = [...farm.daemons.values()].find((d) => d !== l && d.serving)!;
      await settle(farm, call(l, 'CreateSwitch', { name: 'ext', type: 'SWITCH_TYPE_EXTERNAL' }));
      // The leader's entries reach the follower 300 ms late (within its election timeout): it
      // applies the cluster after the call.
      farm.net.slowLink(l.id, follower.id, 300, 0);
      const cluster = await settle<{ id: string }>(
        farm,
        call(l, 'CreateNlbCluster', {
          name: 'web',
          virtualIp: '10.0.0.100',
          mode: 'NLB_MODE_UNICAST',
          switchName: 'ext',
        }),
      );
      expect(follower.machine.state.nlbClusters.has(cluster.id)).to.equal(false);
      const deleted = await settle(farm, call(follower, 'DeleteNlbCluster', { id: cluster.id })).then(
        () => 'deleted',
        (err: unknown) => `code ${statusOf(err)}: ${(err as Error).message}`,
      );
      expect(deleted).to.equal('deleted');
      expect(l.machine.state.nlbClusters.has(cluster.id)).to.equal(false);
      // And a cluster that never was is still NOT_FOUND.
      const missing = await settle(farm, call(follower, 'DeleteNlbCluster', { id: 'web' })).catch(
        (err: unknown) => statusOf(err),
      );
      expect(missing).to.equal(status.NOT_FOUND);
    } finally {
      farm.drillHandle().end();
    }
  });
});

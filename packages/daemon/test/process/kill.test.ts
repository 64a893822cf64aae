import type * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { status, type pb } from '@hyperfarm/api';
import { ProcessFarm, until, vmSpec } from './harness.js';

const CREATES = 60;
const WORKERS = 6;
/** How long one create may keep being retried, and how long anything else may take: generous, the machine is shared. */
const PATIENCE_MS = 120_000;

/**
 * kill -9 of the leader while clients create VMs: every create a client saw acknowledged exists
 * afterwards, exactly once, on every daemon (the restarted one included), and finishes. Clients
 * retry what was not acknowledged with the same request id (so a create that committed but lost
 * its answer is not made twice), at whichever daemon answers. Everything waits on conditions
 * with generous deadlines: on a loaded machine elections, grants and agent calls are slow, and a
 * new leader may see the hosts Suspect for a while (creates then wait for a host; they used to
 * fail, and their VMs vanish).
 */
describe('kill -9 of the leader during creates (real processes)', function () {
  this.timeout(6 * PATIENCE_MS);
  let farm: ProcessFarm;

  before(async () => {
    farm = await ProcessFarm.start({ daemons: 3 });
    await farm.startAgent('rack', 2);
    await until('2 hosts Up', PATIENCE_MS, async () => {
      const { hosts } = await farm.client('daemon-1').listHosts({ state: 'HOST_STATE_UP' });
      return hosts.length === 2 ? true : undefined;
    });
  });

  after(() => farm?.stop());

  it('loses no acknowledged create and makes none twice', async () => {
    const acked = new Map<string, pb.Operation__Output>();
    let next = 0;
    let ackedAfterKill = 0;
    let termAtKill = 0;
    const killAt = CREATES / 3;
    let killed: string | undefined;

    const create = async (i: number): Promise<void> => {
      const name = `vm-${i}`;
      const deadline = Date.now() + PATIENCE_MS;
      for (let attempt = 0; ; attempt++) {
        const live = farm.liveDaemons();
        const daemon = live[(i + attempt) % live.length]!;
        try {
          const op = await farm
            .client(daemon)
            .createVm({ config: vmSpec(name, 64), requestId: `req-${i}` }, { timeoutMs: 10_000 });
          acked.set(name, op);
          if (killed) ackedAfterKill++;
          return;
        } catch (err) {
          // Anything may have happened: try again with the same request id.
          if (Date.now() > deadline) throw new Error(`${name}: ${(err as grpc.ServiceError).details}`);
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    };

    const worker = async (): Promise<void> => {
      while (next < CREATES) {
        const i = next++;
        if (i === killAt && !killed) {
          killed = await until('a leader to kill', PATIENCE_MS, () => farm.leader());
          termAtKill = Number((await farm.client(killed).getClusterStatus({})).term);
          await farm.killDaemon(killed);
        }
        await create(i);
      }
    };
    await Promise.all(Array.from({ length: WORKERS }, worker));
    expect(killed, 'the leader was killed').to.be.a('string');
    farm.startDaemon(killed!);
    expect(acked.size).to.equal(CREATES);

    // Every daemon, the restarted one included, ends with each acknowledged VM exactly once: the
    // one its create answered (a linearizable read, so a daemon that has not caught up waits).
    for (const daemon of farm.daemonIds) {
      let missing: string[] = [];
      const vms = await until(`${daemon} to list every acknowledged VM`, PATIENCE_MS, async () => {
        const { vms } = await farm.client(daemon).listVms({ pageSize: 1000 }, { timeoutMs: 10_000 });
        const names = new Set(vms.map((v) => v.config!.name));
        missing = [...acked.keys()].filter((n) => !names.has(n));
        return missing.length === 0 ? vms : undefined;
      }).catch((err: Error) => {
        throw new Error(`${err.message}; missing: ${missing.join(', ')}`);
      });
      expect(vms.length, daemon).to.equal(CREATES);
      for (const [name, op] of acked) {
        const same = vms.filter((v) => v.config!.name === name);
        expect(
          same.map((v) => v.id),
          `${daemon}: ${name}`,
        ).to.deep.equal([op.targetId]);
      }
    }
    // A retry of an acknowledged create answers the same operation.
    const again = await farm
      .client('daemon-1')
      .createVm({ config: vmSpec('vm-0', 64), requestId: 'req-0' }, { timeoutMs: 10_000 });
    expect(again.id).to.equal(acked.get('vm-0')!.id);
    // And every acknowledged create finishes: placed, and created on its host.
    for (const op of acked.values()) {
      const finished = await until(`operation ${op.id} to finish`, PATIENCE_MS, async () => {
        const o = await farm.client('daemon-2').waitOperation({ id: op.id, timeoutMs: 5_000 });
        return o.done ? o : undefined;
      });
      expect(finished.error?.code ?? status.OK, finished.message).to.equal(status.OK);
    }
    // The creates went on across the leader change (whether any needed a retry depends on timing:
    // a follower that forwards to the new leader may answer at the first try).
    expect(ackedAfterKill).to.be.greaterThan(0);
    const after = await farm.client('daemon-2').getClusterStatus({}, { timeoutMs: 10_000 });
    expect(Number(after.term)).to.be.greaterThan(termAtKill);
  });
});

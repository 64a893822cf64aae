import type * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { status, type pb } from '@hyperfarm/api';
import { ProcessFarm, until, vmSpec } from './harness.js';

const CREATES = 60;
const WORKERS = 6;

/**
 * kill -9 of the leader while clients create VMs: every create a client saw acknowledged exists
 * afterwards, exactly once. Clients retry what was not acknowledged with the same request id (so
 * a create that committed but lost its answer is not made twice), at whichever daemon answers.
 */
describe('kill -9 of the leader during creates (real processes)', function () {
  this.timeout(120_000);
  let farm: ProcessFarm;

  before(async () => {
    farm = await ProcessFarm.start({ daemons: 3 });
    await farm.startAgent('rack', 2);
    await until('2 hosts Up', 20_000, async () => {
      const { hosts } = await farm.client('daemon-1').listHosts({ state: 'HOST_STATE_UP' });
      return hosts.length === 2 ? true : undefined;
    });
  });

  after(() => farm?.stop());

  it('loses no acknowledged create and makes none twice', async () => {
    const acked = new Map<string, pb.Operation__Output>();
    let next = 0;
    let retries = 0;
    const killAt = CREATES / 3;
    let killed: string | undefined;

    const create = async (i: number): Promise<void> => {
      const name = `vm-${i}`;
      for (let attempt = 0; ; attempt++) {
        const live = farm.liveDaemons();
        const daemon = live[(i + attempt) % live.length]!;
        try {
          const op = await farm
            .client(daemon)
            .createVm({ config: vmSpec(name, 64), requestId: `req-${i}` }, { timeoutMs: 5_000 });
          acked.set(name, op);
          return;
        } catch (err) {
          // Anything may have happened: try again with the same request id.
          retries++;
          if (attempt > 200) throw new Error(`${name}: ${(err as grpc.ServiceError).details}`);
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    };

    const worker = async (): Promise<void> => {
      while (next < CREATES) {
        const i = next++;
        if (i === killAt && !killed) {
          killed = await farm.leader();
          await farm.killDaemon(killed!);
        }
        await create(i);
      }
    };
    await Promise.all(Array.from({ length: WORKERS }, worker));
    farm.startDaemon(killed!);

    expect(acked.size).to.equal(CREATES);
    // Every daemon, the restarted one included, ends with each VM exactly once.
    for (const daemon of farm.daemonIds) {
      const names = await until(`${daemon} has caught up`, 30_000, async () => {
        const { vms } = await farm.client(daemon).listVms({ pageSize: 1000 }, { timeoutMs: 2_000 });
        return vms.length >= CREATES ? vms.map((v) => v.config!.name) : undefined;
      });
      expect(names.length, daemon).to.equal(CREATES);
      expect(new Set(names).size, daemon).to.equal(CREATES);
    }
    // A retry of an acknowledged create answers the same operation.
    const again = await farm.client('daemon-1').createVm({ config: vmSpec('vm-0', 64), requestId: 'req-0' });
    expect(again.id).to.equal(acked.get('vm-0')!.id);
    // And every acknowledged create finishes: placed, and created on its host.
    for (const op of acked.values()) {
      const finished = await farm.client('daemon-2').waitOperation({ id: op.id, timeoutMs: 30_000 });
      expect([finished.done, finished.error?.code ?? status.OK], finished.message).to.deep.equal([
        true,
        status.OK,
      ]);
    }
    expect(retries).to.be.greaterThan(0);
  });
});

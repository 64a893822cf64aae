import { expect } from 'chai';
import type { pb } from '@hyperfarm/api';
import { HyperfarmClient, OperationFailedError, type RetryInfo } from '../src/index.js';
import { ProcessFarm } from '../src/farm/process-farm.js';
import { agreedLeader, until, vmSpec } from './helpers.js';

const CREATES = 30;
const FAST = ['--heartbeat-ms', '200', '--suspect-after-ms', '600', '--down-after-ms', '1500'];

describe('HyperfarmClient against a farm of real processes, with the leader killed', function () {
  this.timeout(120_000);
  let farm: ProcessFarm;
  const clients: HyperfarmClient[] = [];
  const newClient = (endpoints: string[], extra = {}) => {
    const c = new HyperfarmClient({ endpoints, ...extra });
    clients.push(c);
    return c;
  };

  before(async () => {
    farm = await ProcessFarm.start({ daemons: 3, daemonArgs: FAST });
    await agreedLeader(farm);
    await farm.startAgent('rack', 2);
    const c = newClient(farm.endpoints);
    await until('2 hosts Up', 30_000, async () => {
      const { hosts } = await c.call('listHosts', { state: 'HOST_STATE_UP' });
      return hosts.length === 2 ? true : undefined;
    });
  });

  after(async () => {
    clients.forEach((c) => c.close());
    await farm?.stop();
  });

  it('loses no create and makes none twice; Watch resumes without a gap or a repeat', async () => {
    const leader = await agreedLeader(farm);
    // The leader first, so both the writes and the watch stream are on it when it dies.
    const endpoints = [leader.address, ...farm.endpoints.filter((e) => e !== leader.address)];
    const retries: RetryInfo[] = [];
    const client = newClient(endpoints, { onRetry: (r: RetryInfo) => retries.push(r) });
    const watcher = newClient(endpoints);

    const events: pb.Event__Output[] = [];
    const reconnects: number[] = [];
    const stop = new AbortController();
    const watching = (async () => {
      const stream = watcher.watch(
        { kinds: ['RESOURCE_KIND_VM'] },
        { signal: stop.signal, onReconnect: (r) => reconnects.push(r.fromRevision) },
      );
      for await (const e of stream) events.push(e);
    })();

    let next = 0;
    const worker = async () => {
      while (next < CREATES) {
        const i = next++;
        if (i === CREATES / 3) await farm.kill(leader.id);
        await client.call('createVm', { config: vmSpec(`vm-${i}`) });
      }
    };
    await Promise.all([worker(), worker(), worker()]);

    const vms = await client.list('listVms', {}, (r) => r.vms);
    expect(vms.map((v) => v.config!.name).sort()).to.deep.equal(
      Array.from({ length: CREATES }, (_, i) => `vm-${i}`).sort(),
    );
    expect(retries.length, 'the leader was killed under the writes').to.be.above(0);
    expect(client.endpoint).to.not.equal(leader.address);

    await until('the watch sees every VM', 30_000, () =>
      new Set(events.map((e) => e.vm?.config?.name)).size >= CREATES ? true : undefined,
    );
    stop.abort();
    await watching;
    expect(reconnects.length, 'the watch stream broke and resumed').to.be.above(0);
    const revisions = events.map((e) => Number(e.revision));
    expect(revisions, 'strictly increasing: nothing repeated').to.deep.equal(
      [...new Set(revisions)].sort((a, b) => a - b),
    );
  });

  it('runs an operation to the end as a promise, with progress, and rejects a failed one', async () => {
    const client = newClient(farm.endpoints);
    const seen: pb.Operation__Output[] = [];
    const created = await client.run(
      'createVm',
      { config: vmSpec('op-vm'), start: true },
      { onProgress: (o) => seen.push(o), intervalMs: 100 },
    );
    expect(created.done).to.equal(true);
    expect(seen.at(-1)!.done).to.equal(true);
    expect(seen[0]!.done).to.equal(false);
    const vm = await until('op-vm Running', 30_000, async () => {
      const v = await client.call('getVm', { id: 'op-vm' });
      return v.status?.state === 'VM_STATE_RUNNING' ? v : undefined;
    });
    const err = await client.run('deleteVm', { id: vm.id }).then(
      () => undefined,
      (e: unknown) => e,
    );
    // The daemon refuses to delete a Running VM, either at once or as the operation's error.
    expect(String(err)).to.match(/FAILED_PRECONDITION/);
    if (err instanceof OperationFailedError) expect(err.operation.done).to.equal(true);
  });
});

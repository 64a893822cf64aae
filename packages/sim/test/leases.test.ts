import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger, freePorts } from '@hyperfarm/api';
import { agentConfigSchema, startAgent, type RunningAgent } from '@hyperfarm/agent';
import { loadDaemonConfig, startDaemon, type RunningDaemon } from '@hyperfarm/daemon';

// Lease grants to a multi-host agent process, between a real daemon and a real agent in this
// process: the leader renews the hosts of one process with one GrantLease call, and a host of
// the process that is gone costs only its own lease, even when it was the one called.

const silent = (id: string) => createLogger({ program: 't', id, level: 'silent' });

async function until(what: string, ms: number, check: () => boolean): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('lease grants to a multi-host agent process', function () {
  this.timeout(60_000);
  let dir: string;
  let daemon: RunningDaemon | undefined;
  let agent: RunningAgent | undefined;

  afterEach(async () => {
    await agent?.stop().catch(() => undefined);
    await daemon?.stop();
    agent = undefined;
    daemon = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  it('keeps the other hosts Up when the host their grants ride on stops, and only that one goes Down', async () => {
    dir = mkdtempSync(join(tmpdir(), 'hf-leases-'));
    const [port] = await freePorts('127.0.0.1', 1);
    const address = `127.0.0.1:${port}`;
    daemon = await startDaemon(
      loadDaemonConfig(
        [
          '--id',
          'd1',
          '--grpc-address',
          address,
          '--metrics-address',
          '127.0.0.1:0',
          '--data-dir',
          join(dir, 'd1'),
          '--peers',
          `d1=${address}`,
          '--console-address',
          'off',
          '--liveness-profile',
          'fast',
        ],
        {},
      ),
      silent('d1'),
    );
    const base = agentConfigSchema.parse({
      grpcAddress: '127.0.0.1:0',
      metricsAddress: '127.0.0.1:0',
      dataDir: join(dir, 'agent'),
      logLevel: 'silent',
      hosts: 3,
      idPrefix: 'rack',
      daemons: [address],
      leaseMs: 1_000,
    });
    agent = await startAgent({ ...base, memoryBytes: base.memoryMib * 1024 * 1024 }, silent('rack'));
    const state = (id: string) => daemon!.machine.state.hosts.get(id)?.state;
    const ids = agent.hosts.map((h) => h.id);
    await until('3 hosts Up', 30_000, () => ids.every((id) => state(id) === 'HOST_STATE_UP'));
    // Let the leader learn from a first round of answers which hosts share the process.
    await new Promise((r) => setTimeout(r, 1_000));

    // The leader calls the first host of the process it knows, carrying the others' grants.
    const carrier = [...daemon.machine.state.hosts.keys()][0]!;
    const others = ids.filter((id) => id !== carrier);
    await agent.hosts.find((h) => h.id === carrier)!.stop();
    await until(`${carrier} Down`, 20_000, () => state(carrier) === 'HOST_STATE_DOWN');
    // Down took 1 s of silence (the fast profile): twice that again, and the others never left Up.
    const seen = new Set<string | undefined>();
    const deadline = Date.now() + 2_000;
    while (Date.now() < deadline) {
      for (const id of others) seen.add(state(id));
      await new Promise((r) => setTimeout(r, 20));
    }
    expect([...seen]).to.deep.equal(['HOST_STATE_UP']);
  });
});

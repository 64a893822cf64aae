import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '@hyperfarm/api';
import { agentConfigSchema } from '../src/config.js';
import { startAgent, type RunningAgent } from '../src/server.js';
import { mib } from './helpers.js';
import { agentClient } from './process-helpers.js';

describe('GrantLease while VM records wait to be written', function () {
  this.timeout(30_000);
  let dir: string;
  let agent: RunningAgent;
  let client: ReturnType<typeof agentClient>;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hf-lease-'));
    const base = agentConfigSchema.parse({
      id: 'h',
      grpcAddress: '127.0.0.1:0',
      metricsAddress: '127.0.0.1:0',
      dataDir: join(dir, 'h'),
      logLevel: 'silent',
    });
    const logger = createLogger({ program: 't', id: 't', level: 'silent' });
    agent = await startAgent({ ...base, memoryBytes: base.memoryMib * 1024 * 1024 }, logger);
    client = agentClient(agent.grpcAddress);
  });
  afterEach(async () => {
    client.raw.close();
    await agent.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers at once: the lease is in memory, and a renewal stuck behind a slow disk let a healthy host fence itself', async () => {
    const store = agent.hosts[0]!.host.store;
    const write = store.write.bind(store);
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => (release = r));
    // The disk holds every record write until released.
    store.write = async (records, deleted) => {
      await gate;
      return write(records, deleted);
    };
    const config = {
      name: 'slow-disk',
      processor: { count: 1 },
      memoryBytes: mib(64),
      guestOs: 'windows-server-2008-x64',
    };
    const created = client.p.createVm({ vmId: 'v', config, generation: 1 });
    let createAnswered = false;
    void created.then(() => (createAnswered = true));
    const granted = await client.p.grantLease(
      { daemonId: 'd1', term: 1, durationMs: 5_000 },
      { timeoutMs: 3_000 },
    );
    expect(granted.expiresAtMs).to.be.greaterThan(0);
    // The create, whose record is not on disk yet, still waits for it.
    expect(createAnswered).to.equal(false);
    release();
    await created;
  });
});

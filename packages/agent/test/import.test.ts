import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger, status, type pb } from '@hyperfarm/api';
import { AgentHost } from '../src/edge/agent-host.js';
import { importVm } from '../src/edge/migration.js';
import { GuestMemory, pageContent } from '../src/engine/memory.js';
import { encodeDeviceState } from '../src/engine/partition.js';
import { normalizeConfig } from '../src/engine/validate.js';
import { LIMITS_PROFILES } from '../src/limits.js';
import { gib, mib, vmConfig } from './helpers.js';

/** A well-formed migration stream for a 64 MiB VM with a few written pages. */
function stream(tamper: 'none' | 'page' | 'hash' | 'no-trailer'): {
  chunks: pb.MigrationChunk__Output[];
  sha256: string;
} {
  const config = normalizeConfig(vmConfig('moved', { memoryBytes: mib(64) }));
  const memory = new GuestMemory('vm-x', mib(64) / 4096);
  for (const p of [0, 1, 2, 500, 16383]) memory.write(p);
  memory.write(500);
  const device = encodeDeviceState({
    version: 1,
    vcpus: 2,
    integrationServices: true,
    channels: [],
    nics: [],
    disks: [],
    boots: 1,
  });
  const sha256 = memory.stateHash(device);
  const pages = memory.residentPageNumbers().map((n) => ({
    number: n,
    version: memory.versionOf(n),
    data: pageContent(memory.seed, n, memory.versionOf(n)),
  }));
  if (tamper === 'page') pages[1]!.data[100] = pages[1]!.data[100]! ^ 1;
  const chunks: pb.MigrationChunk__Output[] = [
    {
      body: 'header',
      header: {
        vmId: 'vm-x',
        config,
        generation: 9,
        kind: 'MIGRATION_KIND_QUICK',
        totalPages: memory.totalPages,
        targetState: 'VM_STATE_RUNNING',
        sourceHostId: 'elsewhere',
      },
    },
    { body: 'pages', pages: { round: 0, pages, zeroPages: [7] } },
    { body: 'deviceState', deviceState: { data: device } },
  ];
  if (tamper !== 'no-trailer') {
    chunks.push({
      body: 'trailer',
      trailer: { sha256: tamper === 'hash' ? sha256.replace(/^./, '0') : sha256, rounds: 1, stoppedAtMs: 0 },
    });
  }
  return { chunks, sha256 };
}

async function* iterate<T>(items: T[]): AsyncIterable<T> {
  for (const i of items) yield i;
}

describe('ImportVm on the target', () => {
  let dir: string;
  let host: AgentHost;
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hf-agent-import-'));
    host = await AgentHost.open({
      settings: {
        id: 'target',
        dataDir: dir,
        logicalProcessors: 4,
        memoryBytes: gib(4),
        rootReserveBytes: gib(1),
        perVmOverheadBytes: mib(32),
        limits: LIMITS_PROFILES['2008'],
        macPoolStart: '00-15-5D-20-00-00',
        macPoolSize: 16,
        leaseMs: 10_000,
      },
      logger: createLogger({ program: 'test', id: 'target', level: 'silent' }),
      clock: () => 5_000,
      tickMs: 0,
    });
  });
  afterEach(async () => {
    await host.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('verifies the hash and runs the VM with the new generation', async () => {
    const { chunks, sha256 } = stream('none');
    const res = await importVm(host, iterate(chunks));
    expect(res.sha256).to.equal(sha256);
    const vm = host.read((e) => e.vms.get('vm-x'));
    expect(vm.status!.state).to.equal('VM_STATE_RUNNING');
    expect(vm.status!.generation).to.equal(9);
    expect(host.read((e) => e.vms.stateHash('vm-x')).sha256).to.equal(sha256);
  });

  for (const [tamper, code, message] of [
    ['page', status.DATA_LOSS, /page 1 version 1 arrived with the wrong content/],
    ['hash', status.DATA_LOSS, /state hash mismatch/],
    ['no-trailer', status.INVALID_ARGUMENT, /ended before the trailer/],
  ] as const) {
    it(`refuses a stream with ${tamper === 'page' ? 'a corrupted page' : tamper === 'hash' ? 'a wrong hash' : 'no trailer'}, installs nothing and frees the memory`, async () => {
      const err = await importVm(host, iterate(stream(tamper).chunks)).catch(
        (e: { code: number; message: string }) => e,
      );
      expect(err).to.have.property('code', code);
      expect((err as { message: string }).message).to.match(message);
      expect(host.read((e) => e.vms.has('vm-x'))).to.equal(false);
      expect(host.read((e) => e.usage()).memoryUsedBytes).to.equal(0);
    });
  }

  it('refuses an import that does not fit with RESOURCE_EXHAUSTED', async () => {
    await host.createVm('big', vmConfig('big', { memoryBytes: mib(3000) }), 1);
    await host.mutate((e) => e.power.change('big', 'VM_ACTION_START'));
    const err = await importVm(host, iterate(stream('none').chunks)).catch((e: { code: number }) => e);
    expect(err).to.have.property('code', status.RESOURCE_EXHAUSTED);
  });
});

import { expect } from 'chai';
import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import { createClient, createLogger, createServer, hyperfarmProto, status, type pb } from '@hyperfarm/api';
import { agentConfigSchema, type AgentConfig } from '../src/config.js';
import { startAgent, type RunningAgent } from '../src/server.js';
import { GuestMemory, pageContent } from '../src/engine/memory.js';
import { bareDeviceState, mib } from './helpers.js';
import { agentClient } from './process-helpers.js';

// Requests that reached outside their folder, or answered INTERNAL, found by the request fuzzer.
// Each case here failed before its fix: a folder outside the data folder was removed or written,
// or the answer was INTERNAL.

/** Every file under `root` but `skip`, with a hash of its content: what must not change. */
function snapshot(root: string, skip: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (p === skip) continue;
      if (e.isDirectory()) {
        out.set(`${relative(root, p)}/`, '');
        walk(p);
      } else out.set(relative(root, p), createHash('sha256').update(readFileSync(p)).digest('hex'));
    }
  };
  walk(root);
  return out;
}

const config = (name: string, over: Partial<pb.VmConfig> = {}): pb.VmConfig => ({
  name,
  processor: { count: 1 },
  memoryBytes: mib(64),
  guestOs: 'windows-server-2003-sp2-x86',
  integrationServices: true,
  workload: { bootMs: 20 },
  ...over,
});

interface Failure {
  code: number;
  details: string;
  field: string;
}

async function failure(p: Promise<unknown>): Promise<Failure> {
  try {
    await p;
  } catch (err) {
    const e = err as { code: number; details: string; metadata?: grpc.Metadata };
    return { code: e.code, details: e.details, field: String(e.metadata?.get('hyperfarm-field')[0] ?? '') };
  }
  throw new Error('expected the call to fail');
}

/**
 * Has the agent pull a migration stream (MigrateIn) from a source that serves `chunks`, and
 * returns how the pull ended.
 */
async function pullFrom(
  address: string,
  vmId: string,
  chunks: pb.MigrationChunk[],
): Promise<Failure | unknown> {
  const source = await createServer({ logger: createLogger({ program: 't', id: 'src', level: 'silent' }) })
    .add('migration', {
      ImportVm: (_call, cb) => cb({ code: status.UNIMPLEMENTED }),
      ExportVm: (call) => {
        for (const c of chunks) call.write(c);
        call.end();
      },
    })
    .listen('127.0.0.1:0');
  const client = createClient(hyperfarmProto().hyperfarm.v1.AgentService, address);
  try {
    return await new Promise((resolve) => {
      const call = client.migrateIn({
        migrationId: 'm-1',
        vmId,
        sourceAddress: source.address,
        sourceGeneration: 1,
        targetGeneration: 2,
      });
      call.on('data', () => undefined);
      call.on('error', (err: grpc.ServiceError) =>
        resolve({
          code: err.code,
          details: err.details,
          field: String(err.metadata.get('hyperfarm-field')[0] ?? ''),
        }),
      );
      call.on('end', () => resolve('prepared'));
    });
  } finally {
    client.close();
    await source.shutdown();
  }
}

/** A well-formed migration stream of a 64 MiB VM, for `vmId`, with the given tampering. */
function stream(vmId: string, tamper: { zeroPage?: number; device?: Buffer } = {}): pb.MigrationChunk[] {
  const memory = new GuestMemory(vmId, mib(64) / 4096);
  memory.write(3);
  const device = tamper.device ?? bareDeviceState();
  return [
    {
      header: {
        vmId,
        config: config('moved'),
        generation: 2,
        kind: 'MIGRATION_KIND_QUICK',
        totalPages: memory.totalPages,
        targetState: 'VM_STATE_RUNNING',
      },
    },
    {
      pages: {
        round: 0,
        pages: [{ number: 3, version: 1, data: pageContent(memory.seed, 3, 1) }],
        zeroPages: tamper.zeroPage === undefined ? [] : [tamper.zeroPage],
      },
    },
    { deviceState: { data: device } },
    { trailer: { sha256: memory.stateHash(device), rounds: 1 } },
  ];
}

describe('requests are confined to their folders, and bad input is never INTERNAL', function () {
  this.timeout(30_000);
  let root: string;
  let data: string;
  let agent: RunningAgent;
  let c: ReturnType<typeof agentClient>;
  let before: Map<string, string>;

  const start = async (over: Partial<AgentConfig> = {}) => {
    const base = agentConfigSchema.parse({
      grpcAddress: '127.0.0.1:0',
      metricsAddress: '127.0.0.1:0',
      dataDir: data,
      logLevel: 'silent',
    });
    agent = await startAgent(
      { ...base, memoryBytes: base.memoryMib * 1024 * 1024, ...over },
      createLogger({ program: 't', id: 't', level: 'silent' }),
    );
    c = agentClient(agent.grpcAddress);
  };

  beforeEach(async () => {
    root = mkdtempSync(join(tmpdir(), 'hf-agent-confined-'));
    data = join(root, 'agent');
    // What a request could reach with '..' or an absolute path: it must stay as it is.
    mkdirSync(join(root, 'victim', 'vms'), { recursive: true });
    writeFileSync(join(root, 'victim', 'keep.txt'), 'keep');
    writeFileSync(join(root, 'victim', 'vms', 'keep.txt'), 'keep');
    await start();
    before = snapshot(root, data);
  });
  afterEach(async () => {
    c.raw.close();
    await agent.stop();
    expect(snapshot(root, data), 'files outside the data folder').to.deep.equal(before);
    rmSync(root, { recursive: true, force: true });
  });

  it("refuses the VM ids '.' and '..'; DeleteVm('..') removes nothing", async () => {
    for (const vmId of ['.', '..', '../victim', '.hidden']) {
      const f = await failure(c.p.createVm({ vmId, config: config('dots'), generation: 1 }));
      expect(f, vmId).to.include({ code: status.INVALID_ARGUMENT, field: 'vm_id' });
    }
    const del = await failure(c.p.deleteVm({ vmId: '..', generation: 1 }));
    expect(del.code).to.equal(status.NOT_FOUND);
    expect(existsSync(join(data, 'state.db'))).to.equal(true);
  });

  it('ImportVmFromFolder trusts nothing in the manifest: a vmId or a file that climbs out is refused', async () => {
    const folder = join(data, 'exports', 'evil');
    mkdirSync(folder, { recursive: true });
    writeFileSync(join(folder, 'payload'), 'pwned');
    const manifest = (vmId: string, files: string[]) => ({
      format: 'hyperfarm-vm-export/1',
      vmId,
      config: config('evil'),
      state: 'VM_STATE_OFF',
      savedHash: '',
      savedPages: 0,
      currentId: '',
      checkpoints: [],
      files,
    });
    writeFileSync(join(folder, 'manifest.json'), JSON.stringify(manifest('../../../victim', [])));
    const byId = await failure(c.p.importVmFromFolder({ folder, generation: 1 }));
    expect(byId).to.include({ code: status.INVALID_ARGUMENT, field: 'folder' });
    writeFileSync(
      join(folder, 'manifest.json'),
      JSON.stringify(manifest('evil-1', ['../../../../victim/pwned'])),
    );
    const byFile = await failure(c.p.importVmFromFolder({ folder, generation: 1 }));
    expect(byFile).to.include({ code: status.INVALID_ARGUMENT, field: 'folder' });
    expect(existsSync(join(root, 'victim', 'pwned'))).to.equal(false);
  });

  it('MigrateIn checks header.vm_id before it writes anything', async () => {
    const r = await pullFrom(agent.grpcAddress, '../../../victim/vm', stream('../../../victim/vm'));
    expect(r).to.include({ code: status.INVALID_ARGUMENT, field: 'header.vm_id' });
  });

  it('MigrateIn with a zero page beyond memory, or device state that is not device state: INVALID_ARGUMENT', async () => {
    const beyond = await pullFrom(agent.grpcAddress, 'vm-a', stream('vm-a', { zeroPage: mib(64) / 4096 }));
    expect(beyond).to.include({ code: status.INVALID_ARGUMENT, field: 'pages.zero_pages' });
    for (const device of [
      Buffer.from('not json'),
      Buffer.from('{"version":1,"channels":7}'),
      Buffer.from('null'),
    ]) {
      const r = await pullFrom(agent.grpcAddress, 'vm-b', stream('vm-b', { device }));
      expect(r, device.toString()).to.include({ code: status.INVALID_ARGUMENT, field: 'device_state.data' });
    }
    expect((await c.p.listVms({})).vms).to.deep.equal([]);
    expect((await c.p.getHostInfo({})).usage!.memoryUsedBytes).to.equal(0);
  });

  it('ExportVmToFolder to a file, or to a name too long: INVALID_ARGUMENT on folder', async () => {
    await c.p.createVm({ vmId: 'v', config: config('v'), generation: 1 });
    const exports = join(data, 'exports');
    mkdirSync(exports, { recursive: true });
    writeFileSync(join(exports, 'a-file'), 'x');
    for (const folder of [
      join(exports, 'a-file'),
      join(exports, 'a-file', 'below'),
      join(exports, 'x'.repeat(300)),
    ]) {
      const f = await failure(c.p.exportVmToFolder({ vmId: 'v', folder }));
      expect(f, folder.slice(-20)).to.include({ code: status.INVALID_ARGUMENT, field: 'folder' });
    }
    const outside = await failure(c.p.exportVmToFolder({ vmId: 'v', folder: join(root, 'victim', 'out') }));
    expect(outside).to.include({ code: status.INVALID_ARGUMENT, field: 'folder' });
  });

  it('UpdateVm masks name only fields VmConfig has: constructor, toString, __proto__, name. are refused', async () => {
    await c.p.createVm({ vmId: 'v', config: config('v'), generation: 1 });
    for (const path of [
      'constructor',
      'toString',
      '__proto__',
      'name.',
      'hasOwnProperty',
      'labels.x',
      'name.length',
    ]) {
      const f = await failure(
        c.p.updateVm({ vmId: 'v', config: config('w'), updateMask: { paths: [path] }, generation: 1 }),
      );
      expect(f, path).to.include({ code: status.INVALID_ARGUMENT, field: 'update_mask' });
    }
    expect((await c.p.getVm({ vmId: 'v' })).config!.name).to.equal('v');
  });

  it('a refused UpdateVm changes no disk: the next snapshot still works', async () => {
    const disks = [
      {
        controller: 'DISK_CONTROLLER_IDE' as const,
        path: 'boot.vhd',
        createType: 'DISK_TYPE_DYNAMIC' as const,
        createSizeBytes: mib(8),
      },
    ];
    await c.p.createVm({ vmId: 'v', config: config('v', { disks }), generation: 1 });
    const missing = [{ ...disks[0]!, path: 'missing.vhd', createSizeBytes: 0 }];
    const f = await failure(
      c.p.updateVm({
        vmId: 'v',
        config: config('v', { disks: missing }),
        updateMask: { paths: ['disks'] },
        generation: 1,
      }),
    );
    expect(f).to.include({ code: status.INVALID_ARGUMENT, field: 'config.disks[0].path' });
    expect((await c.p.getVm({ vmId: 'v' })).config!.disks[0]!.path).to.equal('boot.vhd');
    const ckpt = await c.p.createCheckpoint({ vmId: 'v', name: 'after', generation: 1 });
    expect(ckpt.vmId).to.equal('v');
  });

  it('absolute disk paths: refused outside the data folder unless inside the cluster storage path', async () => {
    const disk = (path: string) => [
      { controller: 'DISK_CONTROLLER_IDE' as const, path, createSizeBytes: mib(2) },
    ];
    const target = join(root, 'victim', 'disk.vhd');
    const f = await failure(
      c.p.createVm({ vmId: 'v', config: config('v', { disks: disk(target) }), generation: 1 }),
    );
    expect(f).to.include({ code: status.INVALID_ARGUMENT, field: 'config.disks[0].path' });
    const climb = await failure(
      c.p.createVm({ vmId: 'w', config: config('w', { disks: disk('sub/../../w2/x.vhd') }), generation: 1 }),
    );
    expect(climb).to.include({ code: status.INVALID_ARGUMENT, field: 'config.disks[0].path' });

    c.raw.close();
    await agent.stop();
    const shared = join(root, 'shared');
    await start({ clusterStoragePath: shared });
    const vm = await c.p.createVm({
      vmId: 'v',
      config: config('v', { disks: disk(join(shared, 'v.vhd')) }),
      generation: 1,
    });
    expect(vm.config!.disks[0]!.path).to.equal(join(shared, 'v.vhd'));
    expect(statSync(join(shared, 'v.vhd')).size).to.be.greaterThan(mib(2));
    before = snapshot(root, data); // the shared disk is where the configuration allows it
  });

  it('with cluster storage, CreateVm checks vm_id before it looks for a manifest there', async () => {
    c.raw.close();
    await agent.stop();
    const shared = join(root, 'shared');
    mkdirSync(shared);
    before = snapshot(root, data);
    await start({ clusterStoragePath: shared });
    // Found by the request fuzzer: a NUL or an over-long id reached the file system (INTERNAL).
    for (const vmId of ['x\u0000y', 'a'.repeat(300), '../victim']) {
      const f = await failure(c.p.createVm({ vmId, config: config('c'), generation: 1 }));
      expect(f, vmId.slice(0, 10)).to.include({ code: status.INVALID_ARGUMENT, field: 'vm_id' });
    }
  });
});

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { PutFn } from './load.js';

/** A 3-member etcd 3.4 cluster on loopback, each member with its own data folder. */
export interface EtcdCluster {
  endpoints: string[];
  /** The leader's client endpoint when the cluster came up. */
  leader: string;
  /** A Put through etcd's gRPC KV API to the leader, over `channels` connections. */
  putFn(channels: number): PutFn;
  stop(): Promise<void>;
}

type KvClient = grpc.Client & {
  Put(
    req: { key: Buffer; value: Buffer },
    opts: grpc.CallOptions,
    cb: (err: grpc.ServiceError | null) => void,
  ): void;
};

type MaintenanceClient = grpc.Client & {
  Status(
    req: object,
    opts: grpc.CallOptions,
    cb: (err: grpc.ServiceError | null, res?: { header: { member_id: number }; leader: number }) => void,
  ): void;
};

interface EtcdPackage {
  etcdserverpb: {
    KV: new (address: string, creds: grpc.ChannelCredentials, options?: grpc.ChannelOptions) => KvClient;
    Maintenance: new (address: string, creds: grpc.ChannelCredentials) => MaintenanceClient;
  };
}

function etcdPackage(): EtcdPackage {
  const def = protoLoader.loadSync(fileURLToPath(new URL('./etcd-kv.proto', import.meta.url)), {
    keepCase: true,
    longs: Number,
  });
  return grpc.loadPackageDefinition(def) as unknown as EtcdPackage;
}

/** The endpoint of the member that leads, asked of each member in turn. */
async function leaderEndpoint(pkg: EtcdPackage, endpoints: string[]): Promise<string | undefined> {
  for (const endpoint of endpoints) {
    const m = new pkg.etcdserverpb.Maintenance(endpoint, grpc.credentials.createInsecure());
    const res = await new Promise<{ header: { member_id: number }; leader: number } | undefined>((resolve) =>
      m.Status({}, { deadline: Date.now() + 1_000 }, (err, r) => resolve(err ? undefined : r)),
    );
    m.close();
    if (res && res.leader !== 0 && res.header.member_id === res.leader) return endpoint;
  }
  return undefined;
}

export async function startEtcd(opts: { basePort: number; binary?: string }): Promise<EtcdCluster> {
  const binary = opts.binary ?? '/usr/bin/etcd';
  const root = mkdtempSync(join(tmpdir(), 'bench-etcd-'));
  const names = ['e1', 'e2', 'e3'];
  const peerPort = (i: number): number => opts.basePort + 10 + i;
  const clientPort = (i: number): number => opts.basePort + i;
  const initialCluster = names.map((n, i) => `${n}=http://127.0.0.1:${peerPort(i)}`).join(',');
  const procs: ChildProcess[] = names.map((name, i) =>
    spawn(
      binary,
      [
        '--name',
        name,
        '--data-dir',
        join(root, name),
        '--listen-peer-urls',
        `http://127.0.0.1:${peerPort(i)}`,
        '--initial-advertise-peer-urls',
        `http://127.0.0.1:${peerPort(i)}`,
        '--listen-client-urls',
        `http://127.0.0.1:${clientPort(i)}`,
        '--advertise-client-urls',
        `http://127.0.0.1:${clientPort(i)}`,
        '--initial-cluster',
        initialCluster,
        '--initial-cluster-state',
        'new',
        '--initial-cluster-token',
        'hyperfarm-bench',
        '--log-level',
        'error',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    ),
  );
  const endpoints = names.map((_, i) => `127.0.0.1:${clientPort(i)}`);
  const pkg = etcdPackage();
  const Kv = pkg.etcdserverpb.KV;
  const clients: KvClient[] = [];
  const stop = async (): Promise<void> => {
    for (const c of clients) c.close();
    await Promise.all(
      procs.map(
        (p) =>
          new Promise<void>((resolve) => {
            if (p.exitCode !== null) return resolve();
            p.once('exit', () => resolve());
            p.kill('SIGTERM');
          }),
      ),
    );
    rmSync(root, { recursive: true, force: true });
  };

  // Ready when a write succeeds (a leader is elected and the cluster commits).
  const probe = new Kv(endpoints[0]!, grpc.credentials.createInsecure());
  clients.push(probe);
  const deadline = performance.now() + 30_000;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) =>
      probe.Put(
        { key: Buffer.from('probe'), value: Buffer.from('x') },
        { deadline: Date.now() + 1_000 },
        (err) => resolve(!err),
      ),
    );
    if (ok) break;
    if (performance.now() > deadline) {
      await stop();
      throw new Error('etcd cluster did not accept a write within 30 s');
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const leader = (await leaderEndpoint(pkg, endpoints)) ?? endpoints[0]!;

  return {
    endpoints,
    leader,
    putFn(channels: number): PutFn {
      // Each channel is one HTTP/2 connection, all to the leader as the hyperfarm load goes to its leader.
      const pool = Array.from({ length: channels }, () => {
        const c = new Kv(leader, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
        clients.push(c);
        return c;
      });
      let next = 0;
      return (key, value) =>
        new Promise<void>((resolve, reject) => {
          const client = pool[next++ % pool.length]!;
          client.Put({ key: Buffer.from(key), value }, { deadline: Date.now() + 10_000 }, (err) =>
            err ? reject(err) : resolve(),
          );
        });
    },
    stop,
  };
}

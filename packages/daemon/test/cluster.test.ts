import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import {
  checkHealth,
  createClient,
  freePorts,
  hyperfarmProto,
  listServices,
  promiseClient,
  type pb,
} from '@hyperfarm/api';

const bin = fileURLToPath(new URL('../dist/bin/hyperfarm-daemon.js', import.meta.url));
const v1 = hyperfarmProto().hyperfarm.v1;

/** Polls `check` until it returns a value, failing with the last error after `ms`. */
async function until<T>(what: string, ms: number, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${String(last)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('a 3-daemon control plane over real processes', function () {
  this.timeout(60_000);
  const data = mkdtempSync(join(tmpdir(), 'hf-daemons-'));
  const ids = ['daemon-1', 'daemon-2', 'daemon-3'];
  const procs = new Map<string, ChildProcess>();
  let addresses: Record<string, string>;
  const client = (id: string) => promiseClient(createClient(v1.ClusterService, addresses[id]!));

  const start = (id: string, peers: string) => {
    const proc = spawn(
      process.execPath,
      [
        bin,
        '--id',
        id,
        '--grpc-address',
        addresses[id]!,
        '--metrics-address',
        '127.0.0.1:0',
        '--data-dir',
        join(data, id),
        '--peers',
        peers,
        '--log-level',
        'warn',
      ],
      { stdio: 'ignore' },
    );
    procs.set(id, proc);
  };

  /** The leader every live daemon agrees on. */
  const agreedLeader = (live: string[]) =>
    until('one leader agreed by every live daemon', 20_000, async () => {
      const views = await Promise.all(live.map((id) => client(id).listMembers({}, { timeoutMs: 1_000 })));
      const leaders = new Set(views.map((v) => v.leaderId));
      const [leader] = leaders;
      return leaders.size === 1 && leader && live.includes(leader) ? leader : undefined;
    });

  before(async () => {
    const ports = await freePorts('127.0.0.1', ids.length);
    addresses = Object.fromEntries(ids.map((id, i) => [id, `127.0.0.1:${ports[i]}`]));
    const peers = ids.map((id) => `${id}=${addresses[id]}`).join(',');
    for (const id of ids) start(id, peers);
    for (const id of ids)
      await until(`${id} healthy`, 20_000, async () =>
        (await checkHealth(addresses[id]!)) === 'SERVING' ? true : undefined,
      );
  });

  after(() => {
    for (const p of procs.values()) p.kill('SIGKILL');
  });

  it('serves ClusterService and RaftService on one address per daemon', async () => {
    expect(await listServices(addresses['daemon-1']!)).to.include.members([
      'hyperfarm.v1.ClusterService',
      'hyperfarm.v1.RaftService',
    ]);
  });

  it('elects one leader that every daemon reports, with every member a voter', async () => {
    const leader = await agreedLeader(ids);
    const view = await client(leader).listMembers({});
    expect(view.members.map((m: pb.Member__Output) => [m.id, m.role, m.isLeader])).to.deep.equal(
      ids.map((id) => [id, 'voter', id === leader]),
    );
    expect(view.term).to.be.greaterThan(0);
    expect(view.answeredBy).to.equal(leader);
  });

  it('hands leadership over on request, from any daemon', async () => {
    const leader = await agreedLeader(ids);
    const target = ids.find((id) => id !== leader)!;
    const follower = ids.find((id) => id !== leader && id !== target)!;
    expect(await client(follower).transferLeadership({ toId: target })).to.deep.equal({ leaderId: target });
    expect(await agreedLeader(ids)).to.equal(target);
  });

  it('elects a new leader after kill -9 of the leader, and the old one rejoins as follower', async () => {
    const leader = await agreedLeader(ids);
    const proc = procs.get(leader)!;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGKILL');
    await exited;
    const rest = ids.filter((id) => id !== leader);
    const next = await agreedLeader(rest);
    expect(next).to.not.equal(leader);
    start(leader, ids.map((id) => `${id}=${addresses[id]}`).join(','));
    expect(await agreedLeader(ids)).to.equal(next);
  });

  it('refuses bad membership requests with the field and the reason', async () => {
    const err = (p: Promise<unknown>) =>
      p.then(
        () => undefined,
        (e: grpc.ServiceError) => [e.code, e.details],
      );
    const c = client('daemon-1');
    expect(await err(c.addMember({ id: 'Daemon 4', address: '127.0.0.1:1' }))).to.deep.equal([
      grpc.status.INVALID_ARGUMENT,
      "invalid id: 'Daemon 4' is not a daemon id (1 to 63 lowercase letters, digits or dashes)",
    ]);
    expect(await err(c.addMember({ id: 'daemon-4', address: 'nowhere' }))).to.deep.equal([
      grpc.status.INVALID_ARGUMENT,
      "invalid address: 'nowhere' is not host:port",
    ]);
    expect(await err(c.addMember({ id: 'daemon-2', address: '127.0.0.1:1' }))).to.deep.equal([
      grpc.status.ALREADY_EXISTS,
      "member 'daemon-2' already exists",
    ]);
    expect(await err(c.removeMember({ id: 'daemon-9' }))).to.deep.equal([
      grpc.status.NOT_FOUND,
      "member 'daemon-9' not found",
    ]);
    expect(await err(c.promoteMember({ id: 'daemon-2' }))).to.deep.equal([
      grpc.status.FAILED_PRECONDITION,
      "cannot promote member 'daemon-2': it is already a voter",
    ]);
  });
});

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { freePorts, type RunningServer } from '@hyperfarm/api';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import type { ServiceError } from '@grpc/grpc-js';
import { createClient, hyperfarmProto, leaderHint, promiseClient, status } from '@hyperfarm/api';
import { NotLeaderError, RaftArgumentError } from '../../src/core/errors.js';
import { NodeStoppedError, OutcomeUnknownError } from '../../src/node/errors.js';
import { GrpcTransport } from '../../src/transport/grpc-transport.js';
import { encodeKvCommand, KvStateMachine } from '../../src/node/kv-state-machine.js';
import { RaftNode, type StateMachine } from '../../src/node/raft-node.js';
import type { PersistRequest } from '../../src/storage/level-storage.js';
import { EntryType, MessageType } from '../../src/types.js';
import { message, serveRaft, waitFor, waitForAsync } from '../transport/helpers.js';

const freePort = async (): Promise<number> => (await freePorts('127.0.0.1', 1))[0]!;

const put = (key: string, value: string): Uint8Array => encodeKvCommand({ op: 'put', key, value });

interface Member {
  id: string;
  dir: string;
  /** Where its RaftService listens, the same across restarts. */
  address: string;
  sm: KvStateMachine;
  node: RaftNode | undefined;
  server: RunningServer | undefined;
  registry: Registry;
  /** What stopped the node for good, if anything did. */
  fatal?: unknown;
  /** Runs before each of this member's storage batches (stall or fail its disk). */
  beforeWrite?: (request: PersistRequest) => Promise<void>;
}

interface ClusterOptions {
  requestTimeoutMs?: number;
  snapshotEvery?: number;
  snapshotBytes?: number;
  snapshotLogRatio?: number;
  snapshotMinBytes?: number;
  forward?: boolean;
  electionTick?: number;
  /** Given, each snapshot is the state machine's, handed over when this settles. */
  slowSnapshot?: (data: Uint8Array) => Promise<Uint8Array>;
  /** Given, each restore is done by `install`, called when the test lets it (a promise). */
  slowRestore?: (data: Uint8Array, install: () => void) => Promise<void>;
}

/**
 * The state machine, its snapshots handed over late (captured at the call, as the contract
 * asks) and its restores done late, as the options say.
 */
function paced(sm: KvStateMachine, opts: ClusterOptions): StateMachine {
  const { slowSnapshot, slowRestore } = opts;
  return {
    apply: (data, index) => sm.apply(data, index),
    restore: (data) => (slowRestore ? slowRestore(data, () => sm.restore(data)) : sm.restore(data)),
    snapshot: () => (slowSnapshot ? slowSnapshot(sm.snapshot()) : sm.snapshot()),
  };
}

class Cluster {
  members: Member[] = [];
  peers: Record<string, string> = {};
  root = mkdtempSync(join(tmpdir(), 'raft-node-'));

  async start(n: number, opts: ClusterOptions = {}): Promise<void> {
    for (let i = 1; i <= n; i++) this.peers[`n${i}`] = `127.0.0.1:${await freePort()}`;
    this.opts = opts;
    for (const [id, address] of Object.entries(this.peers)) this.add(id, address);
    await Promise.all(this.members.map((m) => this.boot(m)));
  }

  private opts: ClusterOptions = {};

  /** Registers a member with its own folder; `boot` gives it a fresh state machine and node. */
  private add(id: string, address: string): Member {
    const m: Member = {
      id,
      dir: join(this.root, id),
      address,
      sm: new KvStateMachine(),
      node: undefined,
      server: undefined,
      registry: new Registry(),
    };
    this.members.push(m);
    return m;
  }

  /** A member that is not among the founders: it starts empty and waits for the leader. */
  async join(id: string): Promise<Member> {
    const m = this.add(id, `127.0.0.1:${await freePort()}`);
    await this.boot(m);
    return m;
  }

  async boot(m: Member): Promise<void> {
    m.sm = new KvStateMachine();
    m.registry = new Registry();
    const founder = m.id in this.peers;
    m.node = await RaftNode.start({
      id: m.id,
      dataDir: m.dir,
      peers: founder ? this.peers : { ...this.peers, [m.id]: m.address },
      join: !founder,
      stateMachine: this.opts.slowSnapshot || this.opts.slowRestore ? paced(m.sm, this.opts) : m.sm,
      tickMs: 20,
      electionTick: this.opts.electionTick ?? 10,
      seed: Number(m.id.slice(1)),
      snapshotEvery: this.opts.snapshotEvery ?? 10_000,
      ...(this.opts.snapshotBytes ? { snapshotBytes: this.opts.snapshotBytes } : {}),
      ...(this.opts.snapshotLogRatio ? { snapshotLogRatio: this.opts.snapshotLogRatio } : {}),
      ...(this.opts.snapshotMinBytes ? { snapshotMinBytes: this.opts.snapshotMinBytes } : {}),
      snapshotKeep: 5,
      forwardProposals: this.opts.forward ?? false,
      registry: m.registry,
      requestTimeoutMs: this.opts.requestTimeoutMs ?? 5_000,
      beforeWrite: (request) => m.beforeWrite?.(request),
      onFatal: (err) => (m.fatal = err),
    });
    m.server = await serveRaft(m.node, m.address);
  }

  running(): Member[] {
    return this.members.filter((m) => m.node);
  }

  async leader(): Promise<Member> {
    let found: Member | undefined;
    await waitFor('a leader', () => {
      found = this.running().find((m) => m.node!.isLeader());
      return found !== undefined;
    });
    return found!;
  }

  async stop(m: Member): Promise<void> {
    await m.server?.shutdown(500);
    await m.node?.stop();
    m.node = undefined;
    m.server = undefined;
  }

  async close(): Promise<void> {
    await Promise.all(this.running().map((m) => this.stop(m)));
    rmSync(this.root, { recursive: true, force: true });
  }
}

/**
 * Proposes a write on `leader` with the disks of `members` held at it, runs `body` (given the
 * write's index) once they are all writing it, then lets them finish.
 */
async function whileWriting(leader: Member, members: Member[], body: (index: number) => Promise<void>) {
  const held = holdDisks(members);
  const write = leader.node!.propose(put('during', '2'));
  const index = leader.node!.status().lastIndex;
  try {
    await waitFor(`${members.length} writing the entry`, () => held.writing.size === members.length);
    await body(index);
  } finally {
    held.release();
  }
  await write;
}

/** Holds the disks of `members` at their next write of a command, until released. */
function holdDisks(members: Member[]): { writing: Set<string>; release(): void } {
  let release!: () => void;
  const disk = new Promise<void>((resolve) => (release = resolve));
  const writing = new Set<string>();
  for (const m of members) {
    m.beforeWrite = async (request) => {
      if (!request.entries.some((e) => e.type === EntryType.Normal)) return;
      writing.add(m.id);
      await disk;
    };
  }
  return { writing, release };
}

/** Fails unless `p` settles within `ms`. */
async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

describe('RaftNode (3 in-process nodes over loopback gRPC)', function () {
  this.timeout(60_000);
  let c: Cluster;
  afterEach(async () => c.close());

  /** Starts a fresh cluster of three in `c` and waits for its leader. */
  async function startThree(opts: ClusterOptions = {}): Promise<Member> {
    c = new Cluster();
    await c.start(3, opts);
    return c.leader();
  }

  /** Any member other than `leader`, once it has learned who leads. */
  async function followerThatKnows(leader: Member): Promise<Member> {
    const follower = c.members.find((m) => m !== leader)!;
    await waitFor('follower knows the leader', () => follower.node!.status().leader === leader.id);
    return follower;
  }

  it('elects one leader, replicates, and applies on every node', async () => {
    const leader = await startThree();
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => leader.node!.propose(put(`k${i % 5}`, `v${i}`))),
    );
    const indexes = results.map((r) => r.index);
    assert.equal(new Set(indexes).size, 50);
    await waitFor('every node applied', () =>
      c.members.every((m) => m.sm.appliedIndex >= Math.max(...indexes)),
    );
    for (const m of c.members) assert.deepEqual([...m.sm.map], [...leader.sm.map]);
    assert.equal(leader.sm.get('k4'), 'v49');
    const metrics = await leader.registry.metrics();
    assert.match(metrics, /raft_entries_per_fsync_count \d+/);
    assert.match(metrics, /raft_commit_latency_seconds_count 50/);
  });

  it('a follower refuses a proposal and names the leader', async () => {
    const leader = await startThree();
    await leader.node!.propose(put('a', '1'));
    const follower = await followerThatKnows(leader);
    await assert.rejects(follower.node!.propose(put('a', '2')), (err: unknown) => {
      assert.ok(err instanceof NotLeaderError);
      assert.equal(err.leader, leader.id);
      return true;
    });
  });

  it("a follower's refusal carries the leader's address, and over gRPC becomes UNAVAILABLE with it in the trailers", async () => {
    const leader = await startThree();
    const follower = await followerThatKnows(leader);
    await assert.rejects(follower.node!.propose(put('a', '2')), (err: unknown) => {
      assert.ok(err instanceof NotLeaderError);
      assert.equal(err.leaderAddress, leader.address);
      return true;
    });
    // What a daemon's follower answers when asked to lead: the same as any service built on Raft.
    const raft = promiseClient(createClient(hyperfarmProto().hyperfarm.v1.RaftService, follower.address));
    const err = (await raft.forwardPropose({ data: put('a', '3') }).catch((e) => e)) as ServiceError;
    assert.equal(err.code, status.UNAVAILABLE);
    assert.deepEqual(err.metadata.get('hyperfarm-leader-id'), [leader.id]);
    assert.deepEqual(err.metadata.get('hyperfarm-leader-address'), [leader.address]);
    assert.deepEqual(leaderHint(err), { id: leader.id, address: leader.address });
  });

  it('a forwarded write the leader cannot finish is reported with its outcome unknown, not refused', async () => {
    const leader = await startThree({ forward: true, requestTimeoutMs: 1_000 });
    const follower = await followerThatKnows(leader);
    // Stall every disk: the leader takes the entry into its log but cannot commit it in time.
    let release!: () => void;
    const disks = new Promise<void>((resolve) => (release = resolve));
    for (const m of c.members) m.beforeWrite = () => disks;
    try {
      await assert.rejects(follower.node!.propose(put('slow', '1')), (err: unknown) => {
        assert.ok(err instanceof OutcomeUnknownError, String(err));
        assert.match(err.message, /forwarded to the leader 'n\d'.*outcome unknown/);
        return true;
      });
    } finally {
      release();
    }
  });

  it('drops and counts a malformed message, but stops when a message breaks a committed entry', async () => {
    const leader = await startThree();
    const follower = await followerThatKnows(leader);
    // A peer speaking as the leader, straight onto the follower's RaftService.
    const impostor = new GrpcTransport({
      id: leader.id,
      peers: { [follower.id]: follower.address },
      handlers: { onMessages: () => undefined },
    });
    try {
      impostor.send([message({ from: leader.id, to: follower.id, type: MessageType.Append, term: 0 })]);
      await waitForAsync('the refusal counted', async () =>
        /raft_dropped_messages_total\{reason="RaftArgumentError"\} 1/.test(await follower.registry.metrics()),
      );
      assert.equal(follower.fatal, undefined);
      const { index } = await leader.node!.propose(put('b', '2'));
      await waitFor('follower committed it', () => follower.node!.status().commit === index);
      const term = follower.node!.status().term;

      // Entry `index` is committed with `term`; an append carrying another term for it says
      // this node's log and the leader's disagree on committed history (etcd panics on it).
      impostor.send([
        message({
          from: leader.id,
          to: follower.id,
          type: MessageType.Append,
          term,
          index,
          logTerm: term,
          commit: index,
          entries: [{ index, term: term + 1, type: EntryType.Normal, data: put('b', 'forged') }],
        }),
      ]);
      await waitFor('the follower stopped', () => follower.fatal !== undefined);
      assert.match(String(follower.fatal), /conflicts with a committed entry/);
      await assert.rejects(follower.node!.read(), NodeStoppedError);
      assert.notEqual(follower.sm.get('b'), 'forged');
    } finally {
      impostor.close();
    }
  });

  it('refuses a command too large for one message, naming the field and the limit', async () => {
    const leader = await startThree();
    await assert.rejects(leader.node!.propose(new Uint8Array(2 * 1024 * 1024)), (err: unknown) => {
      assert.ok(err instanceof RaftArgumentError);
      assert.equal(err.field, 'data');
      assert.match(err.message, /2097152 bytes, above the 1048576-byte limit/);
      return true;
    });
  });

  it('forwards a follower proposal to the leader when configured', async () => {
    const leader = await startThree({ forward: true });
    const follower = await followerThatKnows(leader);
    const res = await follower.node!.propose(put('f', 'x'));
    assert.ok(res.index > 0);
    assert.equal(JSON.parse(new TextDecoder().decode(res.result)).prev, null);
    await waitFor('follower applied', () => follower.sm.get('f') === 'x');
  });

  it('tells the state machine an entry is awaited only on the node whose proposer waits for it', async () => {
    const leader = await startThree({ forward: true });
    const follower = await followerThatKnows(leader);
    const awaited = new Map<string, number[]>();
    const applied = new Map<string, number[]>();
    for (const m of c.members) {
      const sm = m.sm;
      const apply = sm.apply.bind(sm);
      awaited.set(m.id, []);
      applied.set(m.id, []);
      sm.apply = (data: Uint8Array, index: number, waits?: boolean) => {
        applied.get(m.id)!.push(index);
        if (waits) awaited.get(m.id)!.push(index);
        return apply(data, index);
      };
    }
    const direct = await leader.node!.propose(put('w', '1'));
    // Forwarded: the proposer that waits is the leader's, not the follower's.
    const forwarded = await follower.node!.propose(put('w', '2'));
    assert.deepEqual(JSON.parse(new TextDecoder().decode(direct.result)), { prev: null });
    assert.deepEqual(JSON.parse(new TextDecoder().decode(forwarded.result)), { prev: '1' });
    await waitFor('every node applied both', () =>
      c.members.every((m) => m.sm.appliedIndex >= forwarded.index),
    );
    for (const m of c.members) {
      assert.ok(
        applied.get(m.id)!.includes(direct.index) && applied.get(m.id)!.includes(forwarded.index),
        m.id,
      );
      assert.deepEqual(awaited.get(m.id), m === leader ? [direct.index, forwarded.index] : [], m.id);
      assert.equal(m.sm.get('w'), '2', m.id);
    }
  });

  it('serves linearizable reads on leader and follower', async () => {
    const leader = await startThree();
    await leader.node!.propose(put('r', '1'));
    const follower = c.members.find((m) => m !== leader)!;
    await follower.node!.read();
    assert.equal(follower.sm.get('r'), '1');
    await leader.node!.read();
  });

  it('survives the leader stopping: a new leader is elected and old writes are kept', async () => {
    const first = await startThree();
    for (let i = 0; i < 20; i++) await first.node!.propose(put(`s${i}`, `${i}`));
    await c.stop(first);
    const second = await c.leader();
    assert.notEqual(second.id, first.id);
    await second.node!.propose(put('after', 'yes'));
    for (let i = 0; i < 20; i++) assert.equal(second.sm.get(`s${i}`), `${i}`);
    // The old leader restarts from its disk and catches up.
    await c.boot(first);
    await waitFor('restarted node caught up', () => first.sm.get('after') === 'yes');
    assert.equal(first.sm.get('s19'), '19');
  });

  it('snapshots, compacts, and brings a lagging node back with a snapshot', async () => {
    const leader = await startThree({ snapshotEvery: 20 });
    const lagging = c.members.find((m) => m !== leader)!;
    await c.stop(lagging);
    for (let i = 0; i < 60; i++) await leader.node!.propose(put(`z${i}`, `${i}`));
    await waitFor('leader snapshotted', () => leader.node!.status().snapshotIndex >= 40);
    await c.boot(lagging);
    await waitFor('lagging node caught up', () => lagging.sm.get('z59') === '59');
    assert.equal(lagging.sm.get('z0'), '0');
    assert.ok(lagging.node!.status().snapshotIndex >= 20, 'the lagging node installed a snapshot');
  });

  it('snapshots once the entries applied since the last hold snapshotBytes, however few they are', async () => {
    // 10 entries of 1 KiB each pass 8 KiB long before the count (10,000) would.
    const leader = await startThree({ snapshotBytes: 8 * 1024 });
    const first = leader.node!.status().snapshotIndex;
    for (let i = 0; i < 10; i++) await leader.node!.propose(put(`big${i}`, 'x'.repeat(1024)));
    await waitFor('a snapshot by size', () => leader.node!.status().snapshotIndex > first);
    const taken = leader.node!.status().snapshotIndex;
    // Small entries after it do not reach the size again: no further snapshot.
    for (let i = 0; i < 10; i++) await leader.node!.propose(put(`small${i}`, '1'));
    assert.equal(leader.node!.status().snapshotIndex, taken);
  });

  it('snapshots once the entries applied since the last hold snapshotLogRatio times its size, and snapshotMinBytes', async () => {
    const leader = await startThree({ snapshotLogRatio: 0.5, snapshotMinBytes: 2 * 1024 });
    const first = leader.node!.status().snapshotIndex;
    const kib = (n: number, i: number) => String(i % 10).repeat(n * 1024);
    // The first snapshot is of an empty store: the least size decides.
    await leader.node!.propose(put('small', kib(1, 0)));
    assert.equal(leader.node!.status().snapshotIndex, first, '1 KiB: under the least size');
    await leader.node!.propose(put('big', kib(16, 0)));
    await waitFor('a snapshot past the least size', () => leader.node!.status().snapshotIndex > first);
    // The last snapshot now holds 17 KiB: 6 KiB of writes over it is past the least size but
    // under half the snapshot's own, so no snapshot...
    const second = leader.node!.status().snapshotIndex;
    for (let i = 1; i <= 6; i++) await leader.node!.propose(put('small', kib(1, i)));
    assert.equal(leader.node!.status().snapshotIndex, second, '6 KiB of log against a 17 KiB snapshot');
    // ... until the log since it weighs half of it.
    for (let i = 7; i <= 10; i++) await leader.node!.propose(put('small', kib(1, i)));
    await waitFor(
      'a snapshot once the log weighs half the last',
      () => leader.node!.status().snapshotIndex > second,
    );
  });

  it('encodes a snapshot in the background when the state machine answers a promise: writes go on meanwhile', async () => {
    // Each snapshot captures the state when asked and is encoded only when the test releases it.
    const held: (() => void)[] = [];
    const slowSnapshot = (data: Uint8Array) => new Promise<Uint8Array>((r) => held.push(() => r(data)));
    const leader = await startThree({ snapshotEvery: 20, slowSnapshot });
    const lagging = c.members.find((m) => m !== leader)!;
    await c.stop(lagging);
    const first = leader.node!.status().snapshotIndex;
    for (let i = 0; i < 30; i++) await leader.node!.propose(put(`s${i}`, `${i}`));
    await waitFor('a snapshot asked for', () => held.length > 0);
    // The encoding is pending, and the log still takes writes.
    for (let i = 30; i < 60; i++) await leader.node!.propose(put(`s${i}`, `${i}`));
    assert.equal(leader.node!.status().snapshotIndex, first);
    // From now on every snapshot asked for (by any member: they share `held`) is encoded soon.
    const release = setInterval(() => held.splice(0).forEach((r) => r()), 10);
    try {
      await waitFor('leader saved the snapshot', () => leader.node!.status().snapshotIndex >= 20);
      // The next one is asked for once the first is saved, and brings the lagging node back.
      await waitFor('leader saved the second snapshot', () => leader.node!.status().snapshotIndex >= 40);
      await c.boot(lagging);
      await waitFor('lagging node caught up', () => lagging.sm.get('s59') === '59');
    } finally {
      clearInterval(release);
    }
    assert.equal(lagging.sm.get('s0'), '0');
    assert.ok(lagging.node!.status().snapshotIndex >= 20, 'the lagging node installed a snapshot');
  });

  it('installs a snapshot whose restore takes several turns: nothing applied meanwhile, no election, the leader heard', async () => {
    // Restores of a snapshot started while `hold` is set wait for the test (a farm of 50,000
    // VMs decodes for seconds); the node must keep stepping its peers' messages meanwhile. (A
    // node starting with no snapshot restores empty data, at once.)
    let hold = false;
    const held: (() => void)[] = [];
    const slowRestore = (data: Uint8Array, install: () => void): Promise<void> => {
      if (!hold || data.byteLength === 0) return Promise.resolve(install());
      return new Promise<void>((resolve) => held.push(() => resolve(install())));
    };
    const leader = await startThree({ snapshotEvery: 20, slowRestore });
    const lagging = c.members.find((m) => m !== leader)!;
    await c.stop(lagging);
    for (let i = 0; i < 30; i++) await leader.node!.propose(put(`r${i}`, `${i}`));
    await waitFor('leader saved a snapshot', () => leader.node!.status().snapshotIndex >= 20);
    hold = true;
    const term = leader.node!.status().term;
    await c.boot(lagging);
    await waitFor("the lagging node restoring the leader's snapshot", () => held.length > 0);
    const restoring = lagging.node!.status();
    for (let i = 30; i < 40; i++) await leader.node!.propose(put(`r${i}`, `${i}`));
    const last = leader.node!.status().commit;
    // The follower took the leader's appends in while its state machine was still restoring...
    await waitFor('the follower heard the new commits', () => lagging.node!.status().commit >= last);
    // ...for three election timeouts (10 ticks of 20 ms), without starting an election...
    const since = Date.now();
    await waitFor('three election timeouts', () => Date.now() - since > 600);
    assert.equal(leader.node!.status().term, term);
    assert.ok(leader.node!.isLeader());
    // ...and applied nothing on top of a state that is not yet there.
    assert.equal(lagging.node!.status().applied, restoring.applied);
    assert.equal(lagging.sm.get('r0'), undefined);
    hold = false;
    held.splice(0).forEach((release) => release());
    await waitFor('lagging node caught up', () => lagging.sm.get('r39') === '39');
    assert.equal(lagging.sm.get('r0'), '0');
  });

  it('transfers leadership and changes membership', async () => {
    const leader = await startThree();
    await leader.node!.propose(put('m', '1'));
    const target = c.members.find((m) => m !== leader)!;
    await leader.node!.transferLeadership(target.id);
    await waitFor('target leads', () => target.node!.isLeader());
    const removed = c.members.find((m) => m !== target && m !== leader)!;
    await target.node!.removeMember(removed.id);
    assert.deepEqual(target.node!.status().conf.voters.sort(), [leader.id, target.id].sort());
    await target.node!.propose(put('m', '2'));
  });

  it('adds a learner that catches up, promotes it, and it then counts for the quorum', async () => {
    const leader = await startThree();
    for (let i = 0; i < 10; i++) await leader.node!.propose(put(`j${i}`, `${i}`));
    const joiner = await c.join('n4');
    await leader.node!.addMember('n4', joiner.address, { learner: true });
    await waitFor('learner caught up', () => joiner.sm.get('j9') === '9');
    assert.deepEqual(leader.node!.status().conf.learners, ['n4']);
    await leader.node!.promoteMember('n4');
    assert.deepEqual([...leader.node!.status().conf.voters].sort(), ['n1', 'n2', 'n3', 'n4']);
    // With two of four voters stopped, nothing commits; n4 is needed with the leader and one more.
    const others = c.members.filter((m) => m !== leader && m !== joiner);
    await c.stop(others[0]!);
    const res = await leader.node!.propose(put('quorum', 'with-n4'));
    assert.ok(res.index > 0);
    await waitFor('n4 applied', () => joiner.sm.get('quorum') === 'with-n4');
    assert.equal(joiner.node!.status().addresses.n1, c.peers.n1);
  });

  it('acknowledges a write only once a majority has it on disk', async () => {
    // Long election timeouts (1 s): while the followers' disks are stalled their answers are held
    // back, and the leader must not step down (CheckQuorum) during the observation below.
    const leader = await startThree({ electionTick: 50 });
    await leader.node!.propose(put('warm', '1'));
    const followers = c.members.filter((m) => m !== leader);
    const { writing: stalled, release } = holdDisks(followers);
    let acknowledged = false;
    const write = leader.node!.propose(put('durable', 'yes')).then((r) => {
      acknowledged = true;
      return r;
    });
    try {
      await waitFor('both followers writing the entry', () => stalled.size === 2);
      // Give an early acknowledgement every chance to arrive: the leader's own copy plus either
      // follower's answer would be a majority. Waiting is the only way to observe "nothing came".
      const term = leader.node!.status().term;
      await new Promise((r) => setTimeout(r, 250));
      assert.equal(acknowledged, false, 'acknowledged while both followers were still writing');
      assert.equal(leader.node!.status().term, term);
    } finally {
      release();
    }
    const { index } = await write;
    assert.ok(index > 0);
    await waitFor('followers applied', () => followers.every((f) => f.sm.get('durable') === 'yes'));
  });

  it('confirms a read while every follower is still writing a batch: their heartbeat acknowledgements do not wait for it', async () => {
    // Long election timeouts (1 s), so that the stalls below cannot depose anyone.
    const leader = await startThree({ electionTick: 50 });
    await leader.node!.propose(put('before', '1'));
    await whileWriting(
      leader,
      c.members.filter((m) => m !== leader),
      async () => {
        // The read needs a follower's acknowledgement of a heartbeat, and nothing of the write.
        await within(1_000, 'a read on the leader', leader.node!.read());
        assert.equal(leader.sm.get('before'), '1');
      },
    );
  });

  it('confirms reads on the leader and on a follower while all three are writing a batch', async () => {
    const leader = await startThree({ electionTick: 50 });
    await leader.node!.propose(put('before', '1'));
    const follower = await followerThatKnows(leader);
    await waitFor('the follower applied it', () => follower.sm.get('before') === '1');
    await whileWriting(leader, c.members, async () => {
      await within(1_000, 'a read on the follower', follower.node!.read());
      await within(1_000, 'a read on the leader', leader.node!.read());
    });
  });

  it('a heartbeat does not let a follower apply an entry the leader is still writing', async () => {
    const leader = await startThree({ electionTick: 50 });
    await leader.node!.propose(put('before', '1'));
    const followers = c.members.filter((m) => m !== leader);
    await whileWriting(leader, [leader], async (index) => {
      // The followers write it and acknowledge it: with its own copy the leader counts it
      // committed, though its disk does not hold it yet (were it to crash now, the follower
      // without the entry could win with the leader's vote, and the entry would be overwritten).
      await waitFor('the leader counting the entry committed', () => leader.node!.status().commit >= index);
      // Heartbeats go out every tick (20 ms) meanwhile: none may carry that commit index.
      await new Promise((r) => setTimeout(r, 300));
      for (const f of followers) {
        assert.ok(f.node!.status().commit < index, `${f.id} committed ${f.node!.status().commit}`);
        assert.equal(f.sm.get('during'), undefined);
      }
    });
    await waitFor('the followers applied the write', () =>
      followers.every((f) => f.sm.get('during') === '2'),
    );
  });
});

describe('RaftNode options', () => {
  it('refuses to start with neither a data folder nor an injected storage, naming dataDir', async () => {
    await assert.rejects(
      RaftNode.start({ id: 'n1', peers: { n1: '127.0.0.1:1' }, stateMachine: new KvStateMachine() }),
      (err: unknown) => err instanceof RaftArgumentError && err.field === 'dataDir',
    );
  });
});

describe('RaftNode applying a large Ready (a node of its own)', function () {
  this.timeout(30_000);
  let dir: string;
  let node: RaftNode | undefined;
  afterEach(async () => {
    await node?.stop();
    node = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  /**
   * A lone voter (it commits an entry as it appends it, so the entries proposed in one turn are
   * committed in one Ready) whose state machine notes each apply and spins `spinMs` in each.
   */
  async function lone(spinMs: number, applyBudgetMs?: number) {
    dir = mkdtempSync(join(tmpdir(), 'raft-node-apply-'));
    const sm = new KvStateMachine();
    const log: string[] = [];
    const stateMachine: StateMachine = {
      apply: (data, index) => {
        const out = sm.apply(data, index);
        log.push(`apply ${[...sm.map.keys()].at(-1)}`);
        const until = performance.now() + spinMs;
        while (performance.now() < until);
        return out;
      },
      snapshot: () => sm.snapshot(),
      restore: (data) => sm.restore(data),
    };
    node = await RaftNode.start({
      id: 'n1',
      dataDir: dir,
      peers: { n1: `127.0.0.1:${await freePort()}` },
      stateMachine,
      tickMs: 20,
      electionTick: 5,
      seed: 1,
      ...(applyBudgetMs === undefined ? {} : { applyBudgetMs }),
    });
    await waitFor('it leads', () => node!.isLeader());
    // A read index needs an entry of the leader's term committed: this one.
    await node.propose(put('warm', '0'));
    log.length = 0;
    return { node, log };
  }

  it('yields to the event loop between entries once a turn has applied for applyBudgetMs', async () => {
    const { node, log } = await lone(20, 5);
    let seenAt: number | undefined;
    const writes = ['a', 'b', 'c', 'd', 'e', 'f'].map((k) => node.propose(put(k, k)));
    // A timer set as the first of the six is applied falls due only once the event loop turns.
    const first = new Promise<void>((resolve) =>
      setImmediate(function wait() {
        if (log.length === 0) return setImmediate(wait);
        setTimeout(() => {
          seenAt = log.length;
          resolve();
        }, 0);
      }),
    );
    await Promise.all(writes);
    await first;
    assert.ok(seenAt !== undefined && seenAt < 6, `the timer ran after ${seenAt} of 6 entries`);
    assert.deepEqual(log, ['apply a', 'apply b', 'apply c', 'apply d', 'apply e', 'apply f']);
  });

  it('answers a read whose index is applied before it applies the rest of its Ready', async () => {
    const { node, log } = await lone(50, 5);
    // The read's index is taken before the write is proposed: it does not need the write.
    const read = node.read().then(() => log.push('read'));
    const write = node.propose(put('slow', '1'));
    await Promise.all([read, write]);
    assert.deepEqual(log, ['read', 'apply slow']);
  });
});

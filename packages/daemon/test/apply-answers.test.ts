import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import {
  createClient,
  createLogger,
  freePorts,
  hyperfarmProto,
  promiseClient,
  type pb,
} from '@hyperfarm/api';
import {
  encodeEntry,
  loadDaemonConfig,
  startDaemon,
  type Command,
  type RunningDaemon,
} from '../src/index.js';
import { hostPayload } from './fsm/fixtures.js';
import { until, vmSpec } from './process/harness.js';

// Three daemons in this process, each its RaftNode and farm state machine: the follower that
// applies a command nobody on it waits for does not encode the command's result (issues 9 and
// 14), the proposer still receives it, and a client's retry after a leader change, answered by
// a daemon that never encoded the first result, gets that first result.

const v1 = hyperfarmProto().hyperfarm.v1;
const silent = (id: string) => createLogger({ program: 't', id, level: 'silent' });

/** One answer of a daemon's state machine: the entry, whether its node led then, the bytes. */
interface Answer {
  index: number;
  leading: boolean;
  awaited: boolean;
  bytes: Uint8Array;
}

/** Records what the state machine answers RaftNode for each entry it applies. */
function spy(d: RunningDaemon): Answer[] {
  const answers: Answer[] = [];
  const apply = d.machine.apply.bind(d.machine);
  d.machine.apply = (data: Uint8Array, index: number, awaited?: boolean) => {
    const bytes = apply(data, index, awaited);
    answers.push({ index, leading: d.raft.isLeader(), awaited: awaited === true, bytes });
    return bytes;
  };
  return answers;
}

describe("a command's result, on three daemons", function () {
  this.timeout(60_000);
  let dir: string;
  const daemons = new Map<string, RunningDaemon>();

  afterEach(async () => {
    await Promise.all([...daemons.values()].map((d) => d.stop()));
    daemons.clear();
    rmSync(dir, { recursive: true, force: true });
  });

  it('is encoded only where its proposer waits, and a retry after a leader change answers the first', async () => {
    dir = mkdtempSync(join(tmpdir(), 'hf-answers-'));
    const ids = ['d1', 'd2', 'd3'];
    const ports = await freePorts('127.0.0.1', ids.length);
    const address = (id: string) => `127.0.0.1:${ports[ids.indexOf(id)]}`;
    const peers = ids.map((id) => `${id}=${address(id)}`).join(',');
    const started = await Promise.all(
      ids.map((id) =>
        startDaemon(
          loadDaemonConfig(
            [
              '--id',
              id,
              '--grpc-address',
              address(id),
              '--metrics-address',
              '127.0.0.1:0',
              '--data-dir',
              join(dir, id),
              '--peers',
              peers,
              '--console-address',
              'off',
            ],
            {},
          ),
          silent(id),
        ),
      ),
    );
    ids.forEach((id, i) => daemons.set(id, started[i]!));
    const all = [...daemons.values()];
    const agreed = (): string | undefined => {
      const leaders = new Set(all.map((d) => d.raft.status().leader));
      const [leader] = leaders;
      return leaders.size === 1 && leader && daemons.get(leader)!.raft.isLeader() ? leader : undefined;
    };
    const leaderId = await until('one leader agreed by all three', 30_000, agreed);
    const answers = new Map(all.map((d) => [d, spy(d)]));
    const client = (id: string) => promiseClient(createClient(v1.ClusterService, address(id)));

    const [followerId, otherId] = ids.filter((id) => id !== leaderId) as [string, string];
    // A host, for the guest catalog a create is checked against (no agent behind it).
    const register = { type: 'host.register', rid: 'reg-h1', t: Date.now(), ...hostPayload({ id: 'h1' }) };
    await daemons.get(leaderId)!.raft.propose(encodeEntry([register as Command]));
    // One create proposed on the leader, one through a follower (forwarded: the leader waits).
    const first: pb.Operation__Output = await client(leaderId).createVm({
      config: vmSpec('lazy-1'),
      requestId: 'lazy-1',
    });
    const second: pb.Operation__Output = await client(followerId).createVm({
      config: vmSpec('lazy-2'),
      requestId: 'lazy-2',
    });
    expect([first.kind, first.targetId]).to.deep.equal([
      'vm.create',
      daemons.get(leaderId)!.machine.state.vmByName.get('lazy-1'),
    ]);
    expect(second.kind).to.equal('vm.create');
    const last = daemons.get(leaderId)!.raft.status().applied;
    await until('every daemon applied both creates', 10_000, () =>
      all.every((d) => d.raft.status().applied >= last) ? true : undefined,
    );

    // The leader answered what its proposer read: the create's result, as every replica keeps it.
    const leaderAnswers = answers.get(daemons.get(leaderId)!)!;
    let firstResult: unknown;
    const answered = leaderAnswers
      .filter((a) => a.bytes.length > 0)
      .flatMap(
        (a) => JSON.parse(new TextDecoder().decode(a.bytes)) as { opId?: string; results?: unknown[] }[],
      )
      // A turn's creates are one vm.create_compact, answered create by create in `results`.
      .flatMap((r) => [r, ...((r.results ?? []) as { opId?: string }[])]);
    for (const [op, rid] of [
      [first, 'create-vm:lazy-1'],
      [second, 'create-vm:lazy-2'],
    ] as const) {
      const result = answered.find((r) => r.opId === op.id);
      expect(result, op.id).to.deep.equal({ ok: true, vmId: op.targetId, opId: op.id });
      if (op === first) firstResult = result;
      for (const d of all)
        expect(JSON.stringify(d.machine.state.requests.get(rid))).to.equal(JSON.stringify(result));
    }
    // The followers applied the same entries and encoded none of their results.
    for (const id of [followerId, otherId]) {
      const mine = answers.get(daemons.get(id)!)!;
      expect(mine.length, id).to.be.greaterThan(0);
      expect(
        mine.filter((a) => !a.leading && a.bytes.length > 0).map((a) => a.index),
        `${id} encoded results as a follower`,
      ).to.deep.equal([]);
    }

    // The leadership moves to the follower that never encoded the first create's result; the
    // client retries the create there, and gets the first call's operation: no second VM.
    expect(await client(otherId).transferLeadership({ toId: followerId })).to.deep.equal({
      leaderId: followerId,
    });
    await until('the new leader agreed by all three', 30_000, () =>
      agreed() === followerId ? true : undefined,
    );
    const again: pb.Operation__Output = await client(followerId).createVm({
      config: vmSpec('lazy-1'),
      requestId: 'lazy-1',
    });
    expect([again.id, again.targetId, again.kind]).to.deep.equal([first.id, first.targetId, 'vm.create']);
    const retried = daemons.get(followerId)!.raft.status().applied;
    await until('every daemon applied the retry', 10_000, () =>
      all.every((d) => d.raft.status().applied >= retried) ? true : undefined,
    );
    const afterMove = (id: string) => answers.get(daemons.get(id)!)!.filter((a) => a.index > last);
    const reanswered = afterMove(followerId)
      .filter((a) => a.bytes.length > 0)
      .map((a) => new TextDecoder().decode(a.bytes));
    expect(reanswered.some((json) => json.includes(JSON.stringify(firstResult)))).to.equal(true);
    // The daemon that never led encoded nothing; the old leader only what its own proposer,
    // from before the move, still waited for.
    expect(
      afterMove(otherId)
        .filter((a) => a.bytes.length > 0)
        .map((a) => a.index),
    ).to.deep.equal([]);
    expect(
      afterMove(leaderId)
        .filter((a) => !a.leading && !a.awaited && a.bytes.length > 0)
        .map((a) => a.index),
    ).to.deep.equal([]);
    for (const d of all)
      expect([...d.machine.state.vms.values()].filter((vm) => vm.config.name === 'lazy-1')).to.have.length(1);
  });
});

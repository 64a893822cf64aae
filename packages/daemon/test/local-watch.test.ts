import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { createLogger, packageDefinition, type pb } from '@hyperfarm/api';
import type * as protoLoader from '@grpc/proto-loader';
import type { FarmContext } from '../src/edge/farm-context.js';
import type { ClusterCaller } from '../src/edge/gateway/cluster-caller.js';
import { DrillReports } from '../src/edge/gateway/drill-reports.js';
import { LocalWatch } from '../src/edge/gateway/local-watch.js';
import { Session } from '../src/edge/gateway/session.js';
import { watchEvents } from '../src/edge/operations-api.js';
import { eventView, FarmStateMachine, type CommandBody } from '../src/fsm/index.js';
import { hostPayload, vmConfig } from './fsm/fixtures.js';
import { FakeSocket } from './fake-socket.js';

/**
 * The console's event stream served in the daemon's process (local-watch.ts): the gRPC Watch's
 * own code behind the gateway's session, checked against what a gRPC client of Watch receives.
 */

const logger = createLogger({ program: 'test', id: 'local-watch', level: 'silent' });

/** Until `cond` holds, letting the event loop run (the session flushes on setImmediate). */
async function settle(cond: () => boolean = () => false, turns = 50): Promise<void> {
  for (let i = 0; i < turns && !cond(); i++) await new Promise((r) => setImmediate(r));
}

/** What a gRPC client of Watch decodes: the server's serializer, then the client's deserializer. */
function overGrpc(event: pb.Event): pb.Event__Output {
  const watch = (packageDefinition()['hyperfarm.v1.ClusterService'] as protoLoader.ServiceDefinition).Watch!;
  return watch.responseDeserialize(watch.responseSerialize(event)) as pb.Event__Output;
}

/** A daemon's state machine fed entries in order, with a read barrier the test can hold. */
function daemon() {
  const machine = new FarmStateMachine();
  let index = 0;
  let n = 0;
  let barrier: Promise<void> = Promise.resolve();
  const ctx = { machine, raft: { read: () => barrier } } as unknown as FarmContext;
  const commit = (...commands: CommandBody[]) => {
    const cmds = commands.map((c) => ({ rid: `r${++n}`, t: 1_000 + n, ...c }));
    machine.apply(new TextEncoder().encode(JSON.stringify({ v: 1, cmds })), ++index);
  };
  const vm = (name: string) =>
    commit({
      type: 'vm.create',
      vmId: `vm-${name}`,
      opId: `op-${name}`,
      config: vmConfig({ name, memMiB: 512 }),
      start: false,
      hostId: '',
    });
  const open = (maxQueuedBytes = 1024 * 1024) => {
    const ws = new FakeSocket();
    const caller = {
      watch: (req: { fromRevision: number; kinds: string[] }) =>
        new LocalWatch((r, sink) => watchEvents(ctx, r, sink), req, logger),
    } as unknown as ClusterCaller;
    const drills = new DrillReports(join(tmpdir(), 'hf-no-drills'));
    new Session(ws as never, caller, { maxQueuedBytes, maxCallsInFlight: 4 }, logger, drills);
    return ws;
  };
  const listeners = () => (machine as unknown as { listeners: Set<unknown> }).listeners.size;
  const hold = () => {
    let release!: () => void;
    barrier = new Promise((r) => (release = r));
    return () => {
      barrier = Promise.resolve();
      release();
    };
  };
  return { machine, commit, vm, open, listeners, hold };
}

describe('console Watch in the daemon process', () => {
  it('resumes after a revision with the events a gRPC client of Watch receives, then live ones', async () => {
    const d = daemon();
    d.commit({ type: 'host.register', ...hostPayload({ id: 'h1', memGiB: 64 }) });
    d.vm('a');
    const from = d.machine.state.revision;
    d.vm('b');
    d.vm('c');
    const kept = d.machine.state.events.after(from)!;
    expect(kept.length, 'the VMs and their operations').to.be.at.least(4);

    const ws = d.open();
    ws.browserSends({ type: 'watch', fromRevision: from });
    await settle(() => ws.events().length >= kept.length);
    const expected = kept.map((e) => overGrpc(eventView(d.machine.state, e)));
    expect(ws.events()).to.deep.equal(expected);
    // Several events that reached the gateway in one turn went in one message.
    expect(ws.sent.filter((m) => m.type === 'events')).to.have.length(1);

    // Then each change as it is applied, and nothing twice.
    d.vm('d');
    await settle(() => ws.events().length > kept.length);
    const live = d.machine.state.events.after(d.machine.state.revision - 2)!;
    await settle(() => ws.events().length >= kept.length + live.length);
    expect(ws.events().slice(kept.length)).to.deep.equal(
      live.map((e) => overGrpc(eventView(d.machine.state, e))),
    );
    const revisions = ws.events().map((e) => e.revision);
    expect(revisions).to.deep.equal([...revisions].sort((x, y) => x - y));
    expect(new Set(revisions).size).to.equal(revisions.length);
  });

  it('from revision 0 sends the current state, filtered by kind as Watch filters it', async () => {
    const d = daemon();
    d.commit({ type: 'host.register', ...hostPayload({ id: 'h1', memGiB: 64 }) });
    d.vm('a');
    d.vm('b');
    const ws = d.open();
    ws.browserSends({ type: 'watch', fromRevision: 0, kinds: ['RESOURCE_KIND_VM'] });
    await settle(() => ws.events().length >= 2);
    await settle();
    const events = ws.events();
    expect(events.map((e) => [e.kind, e.type, e.vm?.config?.name])).to.deep.equal([
      ['RESOURCE_KIND_VM', 'EVENT_TYPE_PUT', 'a'],
      ['RESOURCE_KIND_VM', 'EVENT_TYPE_PUT', 'b'],
    ]);
    // Each at the revision that last changed its VM.
    expect(events.map((e) => e.revision)).to.deep.equal(
      ['vm-a', 'vm-b'].map((id) => d.machine.state.vms.get(id)!.revision),
    );
  });

  it('refuses a revision no longer kept with OUT_OF_RANGE naming where to resume, and a bad kind naming the field', async () => {
    const d = daemon();
    d.machine.state.events.capacity = 3;
    d.commit({ type: 'host.register', ...hostPayload({ id: 'h1', memGiB: 64 }) });
    for (const name of ['a', 'b', 'c', 'd']) d.vm(name);
    const oldest = d.machine.state.events.oldestResumable;
    expect(oldest).to.be.above(1);

    const ws = d.open();
    ws.browserSends({ type: 'watch', fromRevision: 1 });
    await settle(() => ws.sent.length > 0);
    expect(ws.sent).to.have.length(1);
    expect(ws.sent[0]).to.deep.nested.include({ type: 'watchError', 'error.codeName': 'OUT_OF_RANGE' });
    expect((ws.sent[0]!.error as { message: string }).message).to.include(`resume from revision ${oldest}`);
    expect(d.listeners(), 'the refused watch is not subscribed').to.equal(0);

    // From the oldest kept revision it is served.
    ws.browserSends({ type: 'watch', fromRevision: oldest });
    await settle(() => ws.events().length >= 3);
    expect(ws.events().map((e) => e.revision)[0]).to.equal(oldest + 1);

    ws.browserSends({ type: 'watch', fromRevision: 0, kinds: ['RESOURCE_KIND_NOPE'] });
    await settle(() => ws.sent.at(-1)?.type === 'watchError');
    expect(ws.sent.at(-1)).to.deep.nested.include({
      type: 'watchError',
      'error.codeName': 'INVALID_ARGUMENT',
      'error.field': 'kinds[0]',
    });
    // A field WatchRequest does not have is refused before Watch runs.
    ws.browserSends({ type: 'watch', fromRevision: 0, kinds: [7] });
    await settle();
    expect(ws.sent.at(-1)).to.deep.nested.include({ type: 'error', 'error.codeName': 'INVALID_ARGUMENT' });
  });

  it('tells a socket that cannot keep up to resync, unsubscribes, and resumes with nothing lost or doubled', async () => {
    const d = daemon();
    d.commit({ type: 'host.register', ...hostPayload({ id: 'h1', memGiB: 64 }) });
    const from = d.machine.state.revision;
    const ws = d.open(4_000);
    ws.browserSends({ type: 'watch', fromRevision: from });
    await settle(() => d.listeners() === 1);
    // The browser reads nothing: what the socket holds grows with each VM's events.
    let i = 0;
    while (!ws.sent.some((m) => m.type === 'resync')) {
      d.vm(`v${i++}`);
      await settle();
      expect(i, 'told to resync').to.be.below(100);
    }
    const resync = ws.sent.find((m) => m.type === 'resync')!;
    const held = ws.events();
    expect(resync.fromRevision).to.equal(held.at(-1)!.revision);
    expect(d.listeners(), 'the stream stopped').to.equal(0);
    expect(ws.bufferedAmount, 'held to the limit and one turn of events').to.be.below(4_000 + 2_000);

    // More changes while it catches up are not queued for it.
    for (let k = 0; k < 5; k++) d.vm(`late${k}`);
    await settle();
    expect(ws.events()).to.have.length(held.length);

    // Once it has read what was queued it resumes where it was told (as often as it is told),
    // and gets every event after, once.
    const all = d.machine.state.events.after(from)!;
    for (let told = 0; ws.events().length < all.length; told++) {
      expect(told, 'resumed').to.be.below(10);
      const last = ws.sent.filter((m) => m.type === 'resync').at(-1)!;
      ws.bufferedAmount = 0;
      const before = ws.sent.length;
      ws.browserSends({ type: 'watch', fromRevision: last.fromRevision });
      await settle(
        () =>
          ws.events().length >= all.length || (ws.sent.length > before && ws.sent.at(-1)!.type === 'resync'),
      );
    }
    expect(ws.events().map((e) => e.revision)).to.deep.equal(all.map((e) => e.revision));
  });

  it('a watch stopped while it waits for the read barrier never subscribes', async () => {
    const d = daemon();
    d.commit({ type: 'host.register', ...hostPayload({ id: 'h1', memGiB: 64 }) });
    const release = d.hold();
    const ws = d.open();
    ws.browserSends({ type: 'watch', fromRevision: 0 });
    ws.browserSends({ type: 'unwatch' });
    release();
    await settle();
    expect(d.listeners()).to.equal(0);
    d.vm('a');
    await settle();
    expect(ws.sent).to.deep.equal([]);
  });
});

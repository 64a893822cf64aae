import type * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import {
  createClient,
  createServer,
  FaultInjector,
  hyperfarmProto,
  promiseClient,
  serverStream,
  status,
  unary,
  withUnimplemented,
  type pb,
  type RunningServer,
} from '../src/index.js';
import { captureLogger } from './helpers.js';

/**
 * Fault injection in the gRPC interceptors. Each side gets its own injector (in a farm each
 * process has one), passed as interceptors, so one test process can play both ends of a link.
 */
describe('fault injection in the transport', () => {
  const v1 = hyperfarmProto().hyperfarm.v1;
  let server: RunningServer;
  let received = 0;
  let streamCancelled: Promise<void>;
  let serverSide: FaultInjector;

  beforeEach(async () => {
    received = 0;
    serverSide = new FaultInjector('agent-1', 7);
    let cancelled!: () => void;
    streamCancelled = new Promise((r) => (cancelled = r));
    server = await createServer({
      logger: captureLogger().logger,
      interceptors: [serverSide.serverInterceptor()],
    })
      .add(
        'agent',
        withUnimplemented(
          'agent',
          {
            GetHostInfo: unary<pb.GetHostInfoRequest__Output, pb.Host>(() => {
              received++;
              return { id: 'h1' };
            }),
            WatchEvents: serverStream<pb.WatchAgentEventsRequest__Output, pb.AgentEvent>(
              async (_req, call) => {
                call.on('cancelled', () => cancelled());
                let sequence = 0;
                while (!call.cancelled) {
                  call.write({ sequence: ++sequence });
                  await new Promise((r) => setTimeout(r, 20));
                }
              },
            ),
          },
          'never',
        ),
      )
      .add('fault', serverSide.handlers())
      .listen('127.0.0.1:0');
    serverSide.addAddress(server.address);
  });
  afterEach(() => server.shutdown(100));

  const clientOf = (from: FaultInjector) =>
    promiseClient(
      createClient(v1.AgentService, server.address, {
        interceptors: [from.clientInterceptor(server.address)],
      }),
    );
  const rule = (
    peer: { name?: string; addresses?: string[] },
    direction: pb.LinkDirection__Output,
    extra: Partial<pb.LinkRule__Output> = {},
  ): pb.LinkRule__Output => ({
    peer: { name: peer.name ?? '', addresses: peer.addresses ?? [] },
    direction,
    cut: false,
    delayMs: 0,
    dropShare: 0,
    ...extra,
  });
  const code = (p: Promise<unknown>) =>
    p.then(
      () => 'OK',
      (e: grpc.ServiceError) => `${status[e.code]}: ${e.details}`,
    );

  it('an outbound cut refuses the call before it leaves: the peer never sees it', async () => {
    const daemon = new FaultInjector('daemon-1', 1);
    daemon.setRules([rule({ addresses: [server.address] }, 'LINK_DIRECTION_OUTBOUND', { cut: true })]);
    expect(await code(clientOf(daemon).getHostInfo({}))).to.match(
      /^UNAVAILABLE: fault injected: the link from daemon-1 to .* is cut$/,
    );
    expect(received).to.equal(0);
    daemon.clearRules([]);
    expect(await code(clientOf(daemon).getHostInfo({}))).to.equal('OK');
    expect(received).to.equal(1);
  });

  it('an inbound cut on the receiver refuses only the peer it names', async () => {
    serverSide.setRules([rule({ name: 'daemon-1' }, 'LINK_DIRECTION_INBOUND', { cut: true })]);
    expect(await code(clientOf(new FaultInjector('daemon-1', 1)).getHostInfo({}))).to.equal(
      'UNAVAILABLE: fault injected: the link from daemon-1 to agent-1 is cut',
    );
    expect(await code(clientOf(new FaultInjector('daemon-2', 1)).getHostInfo({}))).to.equal('OK');
    expect(received).to.equal(1);
  });

  it("a cut of the receiver's answers lets the request act but loses the reply", async () => {
    serverSide.setRules([rule({ name: 'daemon-1' }, 'LINK_DIRECTION_OUTBOUND', { cut: true })]);
    expect(await code(clientOf(new FaultInjector('daemon-1', 1)).getHostInfo({}))).to.match(/^UNAVAILABLE/);
    expect(received).to.equal(1);
  });

  it('a cut breaks a stream already open on the link, and its handler learns it is cancelled', async () => {
    const daemon = new FaultInjector('daemon-1', 1);
    const raw = createClient(v1.AgentService, server.address, {
      interceptors: [daemon.clientInterceptor(server.address)],
    });
    const stream = raw.watchEvents({});
    const events: number[] = [];
    const ended = new Promise<string>((resolve) => {
      stream.on('data', (e: pb.AgentEvent__Output) => {
        events.push(e.sequence);
        if (events.length === 2) daemon.setRules([rule({}, 'LINK_DIRECTION_BOTH', { cut: true })]);
      });
      stream.on('error', (e: grpc.ServiceError) => resolve(`${status[e.code]}: ${e.details}`));
    });
    expect(await ended).to.match(/^UNAVAILABLE: fault injected: the link .* is cut$/);
    await streamCancelled;
    expect(events).to.deep.equal([1, 2]);
    expect(daemon.state().callsCut).to.equal(1);
    raw.close();
  });

  it('the receiver breaks a stream from a peer when it cuts that peer', async () => {
    const raw = createClient(v1.AgentService, server.address, {
      interceptors: [new FaultInjector('daemon-3', 1).clientInterceptor(server.address)],
    });
    const stream = raw.watchEvents({});
    const ended = new Promise<string>((resolve) => {
      stream.once('data', () =>
        serverSide.setRules([rule({ name: 'daemon-3' }, 'LINK_DIRECTION_INBOUND', { cut: true })]),
      );
      stream.on('error', (e: grpc.ServiceError) => resolve(`${status[e.code]}: ${e.details}`));
    });
    expect(await ended).to.equal('UNAVAILABLE: fault injected: the link from daemon-3 to agent-1 is cut');
    await streamCancelled;
    raw.close();
  });

  it('drops the share of messages it is told to, reproducibly from the seed', async () => {
    const outcomes = async (seed: number) => {
      const daemon = new FaultInjector('daemon-1', seed);
      daemon.setRules([rule({}, 'LINK_DIRECTION_OUTBOUND', { dropShare: 0.5 })]);
      const c = clientOf(daemon);
      const out: string[] = [];
      for (let i = 0; i < 60; i++) out.push((await code(c.getHostInfo({}))).slice(0, 11));
      return out;
    };
    const first = await outcomes(42);
    const failed = first.filter((o) => o === 'UNAVAILABLE').length;
    // Binomial(60, 0.5): outside 15..45 has a probability below 1e-4.
    expect(failed).to.be.within(15, 45);
    expect(received).to.equal(60 - failed);
    expect(await outcomes(42)).to.deep.equal(first);
  });

  it('delays every message on a slow link', async () => {
    const daemon = new FaultInjector('daemon-1', 1);
    daemon.setRules([rule({}, 'LINK_DIRECTION_BOTH', { delayMs: 150 })]);
    const started = performance.now();
    expect(await code(clientOf(daemon).getHostInfo({}))).to.equal('OK');
    // The request and the answer each wait 150 ms.
    expect(performance.now() - started).to.be.at.least(290);
    expect(daemon.state().messagesDelayed).to.be.at.least(2);
  });

  it('FaultService names the field of a bad rule, and reports the rules in force', async () => {
    const faults = promiseClient(createClient(v1.FaultService, server.address));
    expect(
      await code(
        faults.setLinkFaults({ rules: [rule({ name: 'x' }, 'LINK_DIRECTION_BOTH', { dropShare: 1.5 })] }),
      ),
    ).to.match(/^INVALID_ARGUMENT: .*rules\[0\]\.drop_share/);
    expect(
      await code(faults.setLinkFaults({ rules: [rule({ name: 'x' }, 'LINK_DIRECTION_UNSPECIFIED')] })),
    ).to.match(/^INVALID_ARGUMENT: .*rules\[0\]\.direction/);
    const s = await faults.setLinkFaults({
      rules: [rule({ name: 'daemon-1' }, 'LINK_DIRECTION_INBOUND', { cut: true })],
    });
    expect(s.rules.map((r) => [r.peer?.name, r.direction, r.cut])).to.deep.equal([
      ['daemon-1', 'LINK_DIRECTION_INBOUND', true],
    ]);
    expect((await faults.fillStorage({ full: true })).storageFull).to.equal(true);
    expect((await faults.clearLinkFaults({})).rules).to.deep.equal([]);
  });
});

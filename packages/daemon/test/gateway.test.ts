import { EventEmitter } from 'node:events';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { WebSocket } from 'ws';
import { createLogger, statusOf, type pb } from '@hyperfarm/api';
import { startGateway } from '../src/edge/gateway/index.js';
import { Session } from '../src/edge/gateway/session.js';
import { DrillReports } from '../src/edge/gateway/drill-reports.js';
import type { ClusterCaller } from '../src/edge/gateway/cluster-caller.js';
import { FakeSocket } from './fake-socket.js';
import { ProcessFarm, until, vmSpec, type Cluster } from './process/harness.js';

const logger = createLogger({ program: 'test', id: 'gateway', level: 'silent' });

/** A WebSocket client that collects what the gateway sends and pairs answers with calls. */
class Browser {
  readonly received: Record<string, unknown>[] = [];
  private seq = 0;
  private waiters: (() => void)[] = [];

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      const m = JSON.parse(String(data)) as Record<string, unknown>;
      // Events that came together arrive in one `events` message: kept here one by one.
      if (m.type === 'events')
        for (const event of m.events as unknown[]) this.received.push({ type: 'event', event });
      else this.received.push(m);
      for (const w of this.waiters.splice(0)) w();
    });
  }

  static async open(url: string, headers: Record<string, string> = {}): Promise<Browser> {
    const browser = new Browser(new WebSocket(url.replace(/^http/, 'ws') + '/ws', { headers }));
    await new Promise<void>((resolve, reject) => {
      browser.ws.once('open', () => resolve());
      browser.ws.once('error', reject);
    });
    return browser;
  }

  send(message: unknown): void {
    this.ws.send(typeof message === 'string' ? message : JSON.stringify(message));
  }

  async next(match: (m: Record<string, unknown>) => boolean, ms = 20_000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + ms;
    for (;;) {
      const found = this.received.find(match);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`no such message; got ${JSON.stringify(this.received)}`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 200);
      });
    }
  }

  async call(method: string, request: unknown): Promise<Record<string, unknown>> {
    const id = ++this.seq;
    this.send({ type: 'call', id, method, request });
    return this.next((m) => m.id === id && (m.type === 'result' || m.type === 'error'));
  }

  close(): void {
    this.ws.close();
  }
}

describe('console gateway', function () {
  this.timeout(60_000);
  const dir = mkdtempSync(join(tmpdir(), 'hf-gateway-'));
  const site = join(dir, 'site');
  let farm: ProcessFarm;
  let grpc: Cluster;
  let consoleAddress: string;

  before(async () => {
    mkdirSync(join(site, 'assets'), { recursive: true });
    writeFileSync(join(site, 'index.html'), '<!doctype html><title>hyperfarm</title>');
    writeFileSync(join(site, 'assets', 'app-1.js'), 'export {};');
    writeFileSync(join(dir, 'secret.txt'), 'not for the web');
    farm = await ProcessFarm.start({ daemons: 1 });
    grpc = farm.client('daemon-1');
    await farm.startAgent('agent-1', 2);
    // The hosts registered (their guest catalog known), so both ways of calling see one state.
    await until('2 hosts Up', 60_000, async () =>
      (await grpc.listHosts({ state: 'HOST_STATE_UP' })).hosts.length === 2 ? true : undefined,
    );
    consoleAddress = (await grpc.getClusterStatus({})).consoleAddress;
    // Each daemon serves a console by default, on a free loopback port.
    expect(consoleAddress).to.match(/^http:\/\/127\.0\.0\.1:\d+$/);
  });

  after(async () => {
    await farm?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  describe('files', () => {
    let url: string;
    let close: () => Promise<void>;
    before(async () => {
      const g = await startGateway({ address: '127.0.0.1:0', daemonId: 'd', logger, dir: site });
      url = g.url;
      close = () => g.close();
    });
    after(() => close());

    it('serves the built files with their types, and nothing outside the folder', async () => {
      const index = await fetch(`${url}/`);
      expect(index.status).to.equal(200);
      expect(index.headers.get('content-type')).to.match(/text\/html/);
      expect(await index.text()).to.contain('hyperfarm');
      const js = await fetch(`${url}/assets/app-1.js`);
      expect(js.headers.get('content-type')).to.match(/javascript/);
      expect(js.headers.get('cache-control')).to.contain('immutable');
      for (const path of ['/../secret.txt', '/%2e%2e/secret.txt', '/assets/../../secret.txt', '/nope.js'])
        expect((await fetch(`${url}${path}`)).status, path).to.equal(404);
      expect((await fetch(`${url}/`, { method: 'POST' })).status).to.equal(405);
    });

    it('says how to build the console when its folder is empty', async () => {
      const g = await startGateway({ address: '127.0.0.1:0', daemonId: 'd', logger, dir: join(dir, 'none') });
      const res = await fetch(`${g.url}/`);
      expect(res.status).to.equal(503);
      expect(await res.text()).to.contain('npm run build');
      await g.close();
    });
  });

  it('greets a browser with the daemon it reached and the consoles it knows', async () => {
    const b = await Browser.open(consoleAddress);
    const hello = await b.next((m) => m.type === 'hello');
    expect(hello).to.deep.include({ protocol: 1, daemonId: 'daemon-1' });
    expect(hello.consoles).to.deep.equal([{ id: 'daemon-1', address: consoleAddress }]);
    b.close();
  });

  it('refuses a page of another site (a cross-site WebSocket), and accepts its own', async () => {
    const err = await Browser.open(consoleAddress, { origin: 'http://evil.example' }).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(err?.message).to.match(/403/);
    const own = await Browser.open(consoleAddress, { origin: consoleAddress });
    own.close();
  });

  it('answers calls with what the gRPC handler answers: results and the same errors', async () => {
    const b = await Browser.open(consoleAddress);
    const status = await b.call('GetClusterStatus', {});
    expect(status.type).to.equal('result');
    expect((status.response as pb.ClusterStatus__Output).consoleAddress).to.equal(consoleAddress);

    // A VM config the handler refuses: the same status and message as over gRPC.
    const bad = { config: { name: 'web-1', memoryBytes: 1 }, start: true };
    const viaGrpc = await grpc.createVm(bad).then(
      () => undefined,
      (e: Error & { details: string }) => e,
    );
    const viaWs = await b.call('CreateVm', bad);
    expect(viaWs.type).to.equal('error');
    expect(viaWs.error).to.deep.include({
      code: statusOf(viaGrpc),
      codeName: 'INVALID_ARGUMENT',
      message: viaGrpc!.details,
    });

    // What is not built answers as over gRPC, in words naming it.
    const notThere = await grpc.whatIfHostFailure({ hostIds: ['h1'] }).then(
      () => undefined,
      (e: Error & { details: string; code: number }) => e,
    );
    const viaWs2 = await b.call('WhatIfHostFailure', { hostIds: ['h1'] });
    expect(notThere, 'the gRPC call fails').to.not.equal(undefined);
    expect((viaWs2.error as { code: number; message: string }).code).to.equal(notThere!.code);
    expect((viaWs2.error as { message: string }).message).to.equal(notThere!.details);
    b.close();
  });

  it('refuses malformed messages with the field and the reason, and keeps serving', async () => {
    const b = await Browser.open(consoleAddress);
    b.send('not json');
    expect(await b.next((m) => m.type === 'error')).to.deep.nested.include({
      'error.codeName': 'INVALID_ARGUMENT',
      'error.message': 'the message is not JSON',
    });
    const cases: [unknown, RegExp][] = [
      [
        { type: 'call', id: 'c1', method: 'ListHosts', request: { pageSizee: 5 } },
        /pageSizee.*not a field of ListHostsRequest/,
      ],
      [
        { type: 'call', id: 'c2', method: 'ListHosts', request: { pageSize: 'ten' } },
        /page_size: must be a whole number/,
      ],
      [
        { type: 'call', id: 'c3', method: 'ListHosts', request: { pageSize: -1 } },
        /page_size: must be a whole number/,
      ],
      [
        { type: 'call', id: 'c4', method: 'ChangeVmState', request: { id: 'x', action: 'JUMP' } },
        /action: 'JUMP' is not one of/,
      ],
      [
        { type: 'call', id: 'c5', method: 'Watch', request: {} },
        /not a ClusterService method the console can call/,
      ],
      [{ type: 'call', id: 'c6', method: 'ListHosts', request: [] }, /invalid request/],
      [{ type: 'call', id: 'c7', method: 'ListHosts', extra: 1 }, /Unrecognized key/],
      [{ type: 'watch', fromRevision: -3 }, /invalid fromRevision/],
      [{ type: 'fly', id: 'c8' }, /invalid type/],
      [
        { type: 'call', id: 'c9', method: 'CreateVm', request: { config: { processor: { count: 1.5 } } } },
        /config\.processor\.count: must be a whole number/,
      ],
    ];
    for (const [message, expected] of cases) {
      const before = b.received.length;
      b.send(message);
      const answer = await b.next((m, i = b.received.indexOf(m)) => i >= before && m.type === 'error');
      expect((answer.error as { message: string }).message, JSON.stringify(message)).to.match(expected);
    }
    // Still serving on the same socket.
    const ok = await b.call('ListHosts', { pageSize: 5 });
    expect(ok.type, JSON.stringify(ok)).to.equal('result');
    b.close();
  });

  it('streams Watch from the current state, then changes, and resumes after a revision', async () => {
    const b = await Browser.open(consoleAddress);
    b.send({ type: 'watch', fromRevision: 0, kinds: ['RESOURCE_KIND_HOST'] });
    const hosts = await until('both hosts as PUT events', 20_000, () => {
      const events = b.received.filter((m) => m.type === 'event').map((m) => m.event as pb.Event__Output);
      return events.length >= 2 ? events : undefined;
    });
    expect(hosts.map((e) => e.kind)).to.deep.equal(['RESOURCE_KIND_HOST', 'RESOURCE_KIND_HOST']);
    const after = Math.max(...hosts.map((e) => e.revision));

    // A VM created over gRPC arrives on a watch resumed after the hosts, and nothing older.
    const c = await Browser.open(consoleAddress);
    c.send({ type: 'watch', fromRevision: after });
    await grpc.createVm({ config: vmSpec('watched-1'), start: false });
    const vm = await c.next(
      (m) => m.type === 'event' && (m.event as pb.Event__Output).kind === 'RESOURCE_KIND_VM',
    );
    expect((vm.event as pb.Event__Output).vm?.config?.name).to.equal('watched-1');
    for (const m of c.received.filter((x) => x.type === 'event'))
      expect((m.event as pb.Event__Output).revision).to.be.above(after);

    // A revision far in the past, once compacted, or one the farm refuses: told in words.
    c.send({ type: 'watch', fromRevision: 0, kinds: ['RESOURCE_KIND_NOPE'] });
    const err = await c.next((m) => m.type === 'watchError' || m.type === 'error');
    expect(err).to.deep.nested.include({
      type: 'watchError',
      'error.codeName': 'INVALID_ARGUMENT',
      'error.field': 'kinds[0]',
    });
    // The daemon serves on.
    expect((await c.call('ListHosts', {})).type).to.equal('result');
    b.close();
    c.close();
  });
});

describe('console session: bounded send queue', () => {
  class FakeStream extends EventEmitter {
    cancelled = false;
    cancel(): void {
      this.cancelled = true;
      this.emit('error', Object.assign(new Error('cancelled'), { code: 1 }));
    }
  }

  it('stops the stream and tells a browser that cannot keep up where to resume', () => {
    const ws = new FakeSocket();
    const streams: { req: unknown; stream: FakeStream }[] = [];
    const caller = {
      watch: (req: unknown) => {
        const stream = new FakeStream();
        streams.push({ req, stream });
        return stream;
      },
    } as unknown as ClusterCaller;
    const drills = new DrillReports(join(tmpdir(), 'hf-no-drills'));
    new Session(ws as never, caller, { maxQueuedBytes: 1_000, maxCallsInFlight: 4 }, logger, drills);
    ws.emit('message', Buffer.from(JSON.stringify({ type: 'watch', fromRevision: 7 })), false);
    expect(streams[0]!.req).to.deep.equal({ fromRevision: 7, kinds: [] });
    const event = (revision: number) => ({ revision, kind: 'RESOURCE_KIND_VM', padding: 'x'.repeat(100) });
    let r = 8;
    while (!streams[0]!.stream.cancelled) streams[0]!.stream.emit('data', event(r++));
    const last = r - 1;
    // More events after the stop are not queued.
    for (let i = 0; i < 100; i++) streams[0]!.stream.emit('data', event(r++));
    // Events that came together went in one message.
    const events = ws.sent.flatMap((m) =>
      m.type === 'event' ? [m.event] : m.type === 'events' ? (m.events as unknown[]) : [],
    );
    expect(events.length).to.equal(last - 7);
    expect(ws.sent.filter((m) => m.type === 'events')).to.have.length(1);
    expect(ws.sent.at(-1)).to.deep.include({ type: 'resync', fromRevision: last });
    // What the socket holds stayed within the limit plus one event and the resync notice.
    expect(ws.bufferedAmount).to.be.below(
      1_000 + 2 * JSON.stringify({ type: 'event', event: event(1) }).length,
    );
    // Once it has read what was queued, the browser resumes where it was told.
    ws.bufferedAmount = 0;
    ws.emit('message', Buffer.from(JSON.stringify({ type: 'watch', fromRevision: last })), false);
    expect(streams[1]!.req).to.deep.equal({ fromRevision: last, kinds: [] });
  });
});

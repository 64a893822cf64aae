import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { WebSocket } from 'ws';
import { createLogger, status } from '@hyperfarm/api';
import { DrillReports } from '../src/edge/gateway/drill-reports.js';
import { startGateway, type Gateway } from '../src/edge/gateway/index.js';

/**
 * The drill reports a console lists and opens (docs/console.md, Drills): only report.json files
 * inside the configured folder, named by a path relative to it; every other path is refused.
 */
const logger = createLogger({ program: 'test', id: 'drills', level: 'silent' });

const report = (drill: string, startedAt: string, oks: boolean[]) => ({
  drill,
  description: '',
  file: `drills/${drill}.yaml`,
  quick: true,
  startedAt,
  durationMs: 1234,
  passed: oks.every(Boolean),
  verdicts: oks.map((ok, i) => ({ expectation: `e${i}`, kind: 'k', line: i, ok, reason: 'r' })),
  steps: [],
  observations: [],
});

async function refusal(p: Promise<unknown>): Promise<{ code?: number; field?: string; message: string }> {
  return p.then(
    () => {
      throw new Error('expected a refusal');
    },
    (err: { code?: number; field?: string; message: string }) => err,
  );
}

describe('drill reports', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hf-drills-'));
  const folder = join(dir, 'drills');
  const outside = join(dir, 'elsewhere');
  const reports = new DrillReports(folder);

  before(() => {
    const put = (path: string, content: unknown) => {
      mkdirSync(join(folder, path), { recursive: true });
      writeFileSync(
        join(folder, path, 'report.json'),
        typeof content === 'string' ? content : JSON.stringify(content),
      );
    };
    put('host-failure', report('host-failure', '2026-12-01T10:00:00.000Z', [true, false, true]));
    put('quick-migration', report('quick-migration', '2026-12-02T10:00:00.000Z', [true, true]));
    put('nightly/leader-failure', report('leader-failure', '2026-11-30T10:00:00.000Z', [true]));
    put('broken', '{"drill": 3');
    // A secret beside the folder, and links from inside the folder to it.
    mkdirSync(join(outside, 'stolen'), { recursive: true });
    writeFileSync(join(outside, 'report.json'), JSON.stringify(report('secret', '2026-12-03T00:00:00Z', [])));
    writeFileSync(
      join(outside, 'stolen', 'report.json'),
      JSON.stringify(report('secret', '2026-12-03T00:00:00Z', [])),
    );
    symlinkSync(outside, join(folder, 'linked'));
    mkdirSync(join(folder, 'filelink'));
    symlinkSync(join(outside, 'report.json'), join(folder, 'filelink', 'report.json'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('lists every report under the folder, newest first, with its verdicts counted', async () => {
    const list = await reports.list();
    const ok = list.filter((r) => !r.error);
    expect(ok.map((r) => [r.path, r.drill, r.passed, r.held, r.failed])).to.deep.equal([
      ['quick-migration', 'quick-migration', true, 2, 0],
      ['host-failure', 'host-failure', false, 2, 1],
      ['nightly/leader-failure', 'leader-failure', true, 1, 0],
    ]);
    // A file that is not a report is listed with why; links out of the folder are not followed.
    expect(list.find((r) => r.path === 'broken')?.error).to.equal('not JSON');
    expect(list.map((r) => r.path)).to.not.include.members(['linked', 'linked/stolen', 'filelink']);
    expect(list.some((r) => r.drill === 'secret')).to.equal(false);
  });

  it('lists a report again as it is now once its file changed', async () => {
    const file = join(folder, 'rerun', 'report.json');
    mkdirSync(join(folder, 'rerun'));
    writeFileSync(file, JSON.stringify(report('rerun', '2026-11-01T00:00:00.000Z', [false])));
    expect((await reports.list()).find((r) => r.path === 'rerun')).to.deep.include({
      passed: false,
      failed: 1,
    });
    writeFileSync(file, JSON.stringify(report('rerun', '2026-11-02T00:00:00.000Z', [true, true])));
    expect((await reports.list()).find((r) => r.path === 'rerun')).to.deep.include({ passed: true, held: 2 });
    rmSync(join(folder, 'rerun'), { recursive: true });
    expect((await reports.list()).some((r) => r.path === 'rerun')).to.equal(false);
  });

  it('reads one report whole by its path', async () => {
    const r = (await reports.read('nightly/leader-failure')) as { drill: string; verdicts: unknown[] };
    expect(r.drill).to.equal('leader-failure');
    expect(r.verdicts).to.have.length(1);
  });

  it('refuses every path that leaves the folder, naming the field', async () => {
    for (const path of [
      '..',
      '../elsewhere',
      'host-failure/../../elsewhere',
      '/etc',
      join(outside),
      '.',
      './host-failure',
      'host-failure/.',
      'a\\..\\..\\elsewhere',
      '%2e%2e',
      '',
      'host-failure\0',
      'a/b/c/d',
      'x'.repeat(600),
    ]) {
      const err = await refusal(reports.read(path));
      expect(err.code, JSON.stringify(path)).to.equal(status.INVALID_ARGUMENT);
      expect(err.field, JSON.stringify(path)).to.equal('path');
    }
    // Well-formed names whose real file lies outside (symbolic links) are refused too.
    for (const path of ['linked', 'linked/stolen', 'filelink']) {
      const err = await refusal(reports.read(path));
      expect(err.code, path).to.equal(status.INVALID_ARGUMENT);
      expect(err.message, path).to.match(/outside the reports folder/);
    }
  });

  it('says a report is missing, or not a report, in words', async () => {
    const missing = await refusal(reports.read('no-such-drill'));
    expect(missing.code).to.equal(status.NOT_FOUND);
    expect(missing.message).to.contain('hyperfarm drill run');
    const broken = await refusal(reports.read('broken'));
    expect(broken.code).to.equal(status.FAILED_PRECONDITION);
    expect(broken.message).to.match(/not a drill report: not JSON/);
  });

  it('lists nothing when no drill has run yet (no folder)', async () => {
    expect(await new DrillReports(join(dir, 'none')).list()).to.deep.equal([]);
  });

  describe('over the console’s WebSocket', () => {
    let gateway: Gateway;
    let ws: WebSocket;
    const received: Record<string, unknown>[] = [];
    const answer = async (id: number) => {
      for (let i = 0; i < 500; i++) {
        const m = received.find((x) => x.id === id);
        if (m) return m;
        await new Promise((r) => setTimeout(r, 10));
      }
      throw new Error(`no answer to ${id}; got ${JSON.stringify(received)}`);
    };

    before(async () => {
      gateway = await startGateway({
        address: '127.0.0.1:0',
        daemonId: 'd',
        logger,
        dir: join(dir, 'no-site'),
        drillReports: folder,
      });
      // No daemon behind it (no gRPC server, no Watch): the drill messages are answered by the
      // gateway from the folder.
      gateway.attach('127.0.0.1:1', () => Promise.resolve());
      ws = new WebSocket(`${gateway.url.replace(/^http/, 'ws')}/ws`);
      ws.on('message', (data) => received.push(JSON.parse(String(data)) as Record<string, unknown>));
      await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    });
    after(async () => {
      ws.close();
      await gateway.close();
    });

    it('lists the reports and sends one', async () => {
      ws.send(JSON.stringify({ type: 'drills', id: 1 }));
      const list = (await answer(1)) as { type: string; folder: string; reports: { path: string }[] };
      expect(list.type).to.equal('drills');
      expect(list.folder).to.equal(folder);
      expect(list.reports.map((r) => r.path)).to.include.members(['host-failure', 'nightly/leader-failure']);
      ws.send(JSON.stringify({ type: 'drill', id: 2, path: 'host-failure' }));
      const one = (await answer(2)) as { type: string; path: string; report: { drill: string } };
      expect(one).to.deep.include({ type: 'drill', path: 'host-failure' });
      expect(one.report.drill).to.equal('host-failure');
    });

    it('refuses a path out of the folder and a malformed request, and keeps serving', async () => {
      ws.send(JSON.stringify({ type: 'drill', id: 3, path: '../elsewhere' }));
      const out = (await answer(3)) as { type: string; error: { codeName: string; field: string } };
      expect(out.type).to.equal('error');
      expect(out.error).to.deep.include({ codeName: 'INVALID_ARGUMENT', field: 'path' });
      ws.send(JSON.stringify({ type: 'drill', id: 4, path: 7 }));
      const bad = (await answer(4)) as { error: { codeName: string; message: string } };
      expect(bad.error.codeName).to.equal('INVALID_ARGUMENT');
      expect(bad.error.message).to.match(/^invalid path/);
      ws.send(JSON.stringify({ type: 'drills', id: 5 }));
      expect((await answer(5)).type).to.equal('drills');
    });
  });
});

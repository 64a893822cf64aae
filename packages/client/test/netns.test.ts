import { expect } from 'chai';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NetnsNetwork, netnsUnavailable, runDrillFile } from '../src/index.js';

/**
 * The launcher's network-namespace mode (docs/drills.md): only where the runner is root and
 * `ip netns` works, as in CI. Elsewhere these tests are skipped, saying why.
 */
const why = netnsUnavailable();
const DRILLS = fileURLToPath(new URL('../../../drills/', import.meta.url));

/** Whether a TCP connection to `address` opens within `ms` (a cut link drops the SYN). */
function reachable(host: string, port: number, ms = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    const done = (ok: boolean) => {
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), ms);
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

const namespaces = () => spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;

describe('network namespaces: each process on its own link, cut for real', function () {
  this.timeout(240_000);
  before(function () {
    if (why) {
      this.test!.parent!.title += ` (skipped: ${why})`;
      this.skip();
    }
  });

  it('a process in its own namespace is reached over the bridge until its link is cut, and again after heal; close removes everything', async () => {
    const net = new NetnsNetwork();
    let server: ChildProcess | undefined;
    try {
      await net.add('a');
      await net.add('b');
      expect(net.ip('a')).to.not.equal(net.ip('b'));
      // A TCP server inside a's namespace, on a's own address.
      const [cmd, ...args] = [...net.command('a'), process.execPath];
      server = spawn(cmd!, [
        ...args,
        '-e',
        `require('net').createServer((s) => s.end()).listen(7000, '${net.ip('a')}', () => console.log('up'))`,
      ]);
      await new Promise<void>((resolve) => server!.stdout!.once('data', () => resolve()));
      expect(await reachable(net.ip('a'), 7000)).to.equal(true);
      // From b's namespace too (process to process over the bridge).
      const fromB = spawnSync(
        net.command('b')[0]!,
        [
          ...net.command('b').slice(1),
          process.execPath,
          '-e',
          `require('net').connect(7000, '${net.ip('a')}').on('connect', () => process.exit(0)).on('error', () => process.exit(1))`,
        ],
        { timeout: 5_000 },
      );
      expect(fromB.status).to.equal(0);
      await net.cut(['a']);
      expect(net.linkUp('a')).to.equal(false);
      expect(await reachable(net.ip('a'), 7000)).to.equal(false);
      await net.heal();
      expect(net.linkUp('a')).to.equal(true);
      expect(await reachable(net.ip('a'), 7000, 5_000)).to.equal(true);
    } finally {
      server?.kill('SIGKILL');
      await net.close();
    }
    expect(namespaces()).not.to.include(`hf-${process.pid}-`);
    expect(spawnSync('ip', ['link', 'show', `hfb${process.pid}`]).status).to.not.equal(0);
  });

  it('partition-minority in namespaces: the minority daemon loses its link and the farm keeps serving', async () => {
    const out = mkdtempSync(join(tmpdir(), 'drill-netns-'));
    try {
      const lines: string[] = [];
      const { report } = await runDrillFile(join(DRILLS, 'partition-minority.yaml'), {
        quick: true,
        out,
        netns: true,
        onStep: (l) => lines.push(l),
      });
      const failed = report.verdicts.filter((v) => !v.ok).map((v) => `${v.expectation}: ${v.reason}`);
      expect(failed, lines.join('\n')).to.deep.equal([]);
      expect(lines.join('\n')).to.include('own network namespace');
      expect(lines.join('\n')).to.match(/cut daemon-\d off from the other daemons \(link down\)/);
      expect(report.verdicts.map((v) => v.kind)).to.include.members(['noWriteLost', 'oneHost']);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
    expect(namespaces()).not.to.include(`hf-${process.pid}-`);
  });
});

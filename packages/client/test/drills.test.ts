import { expect } from 'chai';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hyperfarmProgram, runDrillFile, runProgram } from '../src/index.js';

/**
 * The shipped drills are the integration suite: each runs at its --quick scale on its own farm
 * of real processes (one farm at a time). The others run in `npm run drills` (docs/drills.md).
 */
const DRILLS = fileURLToPath(new URL('../../../drills/', import.meta.url));
const IN_NPM_TEST = ['host-failure', 'leader-failure', 'partition-minority', 'agent-isolation'];

describe('the shipped drills, at their quick scale, on farms of real processes', function () {
  this.timeout(240_000);
  const out = mkdtempSync(join(tmpdir(), 'drills-'));
  after(() => rmSync(out, { recursive: true, force: true }));

  for (const name of IN_NPM_TEST)
    it(`${name} passes every expectation`, async () => {
      const lines: string[] = [];
      const { report, html, json } = await runDrillFile(join(DRILLS, `${name}.yaml`), {
        quick: true,
        out: join(out, name),
        onStep: (l) => lines.push(l),
      });
      const failed = report.verdicts.filter((v) => !v.ok).map((v) => `${v.expectation}: ${v.reason}`);
      expect(failed, lines.join('\n')).to.deep.equal([]);
      expect(report.verdicts.map((v) => v.kind)).to.include.members(['oneHost', 'noWriteLost', 'timeline']);
      // The agents' own streams were seen: the two-host check had something to check.
      expect(report.observations.some((o) => o.type === 'agent')).to.equal(true);
      expect(JSON.parse(readFileSync(json, 'utf8')).passed).to.equal(true);
      const page = readFileSync(html, 'utf8');
      expect(page).to.include('PASSED');
      for (const v of report.verdicts) expect(page).to.include(v.reason.replace(/'/g, '&#39;'));
      expect(page).not.to.match(/<script|src="http/);
    });

  it('the fault steps no shipped drill of npm test uses play too: full storage, stalls, a daemon killed and restarted', async () => {
    const file = join(out, 'faults.yaml');
    writeFileSync(
      file,
      `name: faults
farm: { daemons: 3, hosts: 2 }
workload:
  vms: [{ name: solo, memory: 128M, host: host-1 }]
timeline:
  - create:
  - label: full
    fill-disk: { host: host-1 }
  - hold: 500ms
  - fill-disk: { host: host-1, full: false }
  - stall: { process: host-2, duration: 300ms }
  - stall: { process: daemon-1, duration: 300ms }
  - kill-daemon: daemon-2
  - restart-daemons:
  - wait: { vmsRunning: all, leader: true, hostsUp: all, within: 60s }
expect:
  - vmsRunning: { within: 30s, after: full }
`,
    );
    const { report } = await runDrillFile(file, { out: join(out, 'faults') });
    const failed = report.verdicts.filter((v) => !v.ok).map((v) => `${v.expectation}: ${v.reason}`);
    expect(failed).to.deep.equal([]);
    const faults = report.observations.flatMap((o) => (o.type === 'fault' ? [o.what] : []));
    expect(faults).to.deep.equal([
      'host-1 storage full',
      'host-1 storage emptied',
      'stall host-2 300 ms',
      'host-2 resumes',
      'stall daemon-1 300 ms',
      'daemon-1 resumes',
      'kill -9 daemon-2',
      'restart daemon-2',
    ]);
  });

  it('a drill whose expectation the farm cannot meet exits 3, naming it and by how much', async () => {
    const file = join(out, 'too-strict.yaml');
    writeFileSync(
      file,
      `name: too-strict
farm: { daemons: 1, hosts: 1 }
workload:
  vms: [{ name: solo, ha: high, memory: 128M }]
timeline:
  - create:
  - label: bounce
    restart-agent: { host: host-1 }
  - wait: { vmsRunning: all, within: 60s }
expect:
  - vmsRunning: { within: 100ms, after: bounce }
`,
    );
    let stdout = '';
    let stderr = '';
    const io = { stdout: (t: string) => (stdout += t), stderr: (t: string) => (stderr += t) };
    const code = await runProgram(
      hyperfarmProgram(io),
      ['drill', 'run', file, '--out', join(out, 'strict')],
      io,
    );
    expect(code, stderr).to.equal(3);
    expect(stdout).to.match(/^drill too-strict: FAILED in /);
    expect(stdout).to.match(
      /\n {2}FAIL {2}VMs solo never down longer than 0\.1 s after 'bounce' \(line 11\): longest down: solo, \d+\.\d s, \d+\.\d s over the 0\.1 s allowed\n/,
    );
    expect(stdout).to.match(/\n {2}PASS {2}no VM runs on two hosts at once/);
    // A failed drill keeps its farm's logs for a post-mortem.
    const logs = /the farm's logs: (.*)\n/.exec(stdout)?.[1];
    expect(logs && existsSync(join(logs, 'host-1.log'))).to.equal(true);
  });
});

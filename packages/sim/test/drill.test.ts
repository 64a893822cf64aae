import { expect } from 'chai';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hyperfarmProgram, runProgram, UsageError, type CliIo } from '@hyperfarm/client';
import { loadDrill } from '@hyperfarm/client';
import { runSimDrillFile, runSimPlan } from '../src/index.js';

// `hyperfarm drill run --sim`: the drill files of drills/ played in the farm simulator, in farm
// time, judged and reported as on real processes (docs/drills.md).

const DRILLS = fileURLToPath(new URL('../../../drills/', import.meta.url));
/** Drills the simulator cannot play yet, and why (the refusal names it). */
const NOT_SIMULATED: Record<string, RegExp> = {};
function io(): CliIo & { out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  return { out, err, stdout: (s: string) => out.push(s), stderr: (s: string) => err.push(s) } as CliIo & {
    out: string[];
    err: string[];
  };
}

describe('drills in the farm simulator (drill run --sim)', function () {
  this.timeout(120_000);
  const out = mkdtempSync(join(tmpdir(), 'sim-drills-'));
  after(() => rmSync(out, { recursive: true, force: true }));

  const names = readdirSync(DRILLS)
    .filter((f) => f.endsWith('.yaml'))
    .map((f) => f.replace(/\.yaml$/, ''));

  for (const name of names)
    for (const quick of [false, true]) {
      const title = `${name}${quick ? ' --quick' : ''}`;
      if (NOT_SIMULATED[name])
        it(`${title} is refused with the reason (exit 2 from the CLI)`, async () => {
          const err = await runSimDrillFile(join(DRILLS, `${name}.yaml`), {
            quick,
            out: join(out, title),
          }).then(
            () => undefined,
            (e: unknown) => e,
          );
          expect(err).to.be.instanceOf(UsageError);
          expect((err as Error).message).to.match(NOT_SIMULATED[name]!);
        });
      else
        it(`${title} passes every expectation, with no invariant violated`, async () => {
          const lines: string[] = [];
          const { report } = await runSimDrillFile(join(DRILLS, `${name}.yaml`), {
            quick,
            out: join(out, title),
            onStep: (l) => lines.push(l),
          });
          const failed = report.verdicts.filter((v) => !v.ok).map((v) => `${v.expectation}: ${v.reason}`);
          expect(failed, lines.join('\n')).to.deep.equal([]);
          expect(report.verdicts.map((v) => v.kind)).to.include.members([
            'oneHost',
            'noWriteLost',
            'timeline',
            'simInvariants',
          ]);
          expect(report.simulation).to.include({ seed: 1 });
          expect(report.simulation!.violations).to.deep.equal([]);
          expect(report.observations.some((o) => o.type === 'agent')).to.equal(true);
        });
    }

  it("a planted bug (failover that does not wait out the old host's lease) fails the drill with the simulator's violations in the report", async () => {
    const file = join(DRILLS, 'agent-isolation.yaml');
    const plan = loadDrill(readFileSync(file, 'utf8'), file, { quick: true });
    // Leases of 3 s that failover waits none of: the isolated host's VM restarts elsewhere while
    // that host still holds its lease and runs it.
    const { report } = await runSimPlan(plan, file, { quick: true, out: join(out, 'planted') }, (o) => ({
      ...o,
      timing: { ...o.timing, leaseMs: 3_000, leaseMarginMs: -3_000 },
    }));
    expect(report.passed).to.equal(false);
    const properties = report.simulation!.violations.map((v) => v.property);
    expect(properties).to.include.members(['vm-on-two-hosts']);
    const invariants = report.verdicts.find((v) => v.kind === 'simInvariants')!;
    expect(invariants.ok).to.equal(false);
    expect(invariants.reason).to.match(/^vm-on-two-hosts at \d+\.\d{3} s: VM \S+ runs on h0001 and h000\d/);
    // The agents' own events show it too.
    expect(report.verdicts.find((v) => v.kind === 'oneHost')!.ok).to.equal(false);
  });

  it('the same seed plays the same run: the same report, byte for byte', async () => {
    const file = join(DRILLS, 'leader-failure.yaml');
    const a = await runSimDrillFile(file, { quick: true, seed: 42, out: join(out, 'seed-a') });
    const b = await runSimDrillFile(file, { quick: true, seed: 42, out: join(out, 'seed-b') });
    expect(readFileSync(b.json, 'utf8')).to.equal(readFileSync(a.json, 'utf8'));
    expect(a.report.simulation?.seed).to.equal(42);
    // Another seed is another run (other election timeouts, other ids).
    const c = await runSimDrillFile(file, { quick: true, seed: 43, out: join(out, 'seed-c') });
    expect(JSON.stringify(c.report.observations)).not.to.equal(JSON.stringify(a.report.observations));
  });

  it('a drill whose expectation is false fails: exit 3, the verdict says by how much, and the seed to replay it', async () => {
    const file = join(out, 'too-strict.yaml');
    // A host's failover takes at least Down (1 s) plus the lease (1 s) and its margin: not 100 ms.
    writeFileSync(
      file,
      `name: too-strict
farm: { daemons: 3, hosts: 2, timing: fast }
workload:
  vms: [{ name: web, memory: 256M, ha: high, host: host-1 }]
timeline:
  - create:
  - label: crash
    kill-agent: { host: host-1 }
  - wait: { vmsRunning: all, within: 30s }
expect:
  - vmsRunning: { within: 100ms, after: crash }
`,
    );
    const cli = io();
    const code = await runProgram(
      hyperfarmProgram(cli),
      ['drill', 'run', file, '--sim', '--seed', '7', '--out', join(out, 'too-strict')],
      cli,
    );
    const text = cli.out.join('');
    expect(code, text + cli.err.join('')).to.equal(3);
    expect(text).to.match(/^drill too-strict \(simulated, seed 7\): FAILED/);
    expect(text).to.match(
      /FAIL {2}VMs web never down longer than 0\.1 s after 'crash' \(line 11\): longest down: web, \d+\.\d s, \d+\.\d s over/,
    );
    expect(text).to.include(`replay: hyperfarm drill run ${file} --sim --seed 7`);
    const report = JSON.parse(readFileSync(join(out, 'too-strict', 'report.json'), 'utf8'));
    expect(report.passed).to.equal(false);
    expect(report.simulation.seed).to.equal(7);
  });

  it('refuses options that need real processes, and a seed without --sim (exit 2)', async () => {
    const file = join(DRILLS, 'host-failure.yaml');
    for (const args of [
      ['--sim', '--attach'],
      ['--sim', '--netns'],
      ['--seed', '3'],
      ['--sim', '--seed', 'x'],
    ]) {
      const cli = io();
      expect(
        await runProgram(hyperfarmProgram(cli), ['drill', 'run', file, ...args], cli),
        args.join(' '),
      ).to.equal(2);
      expect(cli.err.join('')).to.match(/^error: --(sim|seed)/);
    }
  });
});

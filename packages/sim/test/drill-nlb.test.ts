import { expect } from 'chai';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadDrill, UsageError } from '@hyperfarm/client';
import { runSimDrillFile, runSimPlan } from '../src/index.js';

// The NLB drill in the farm simulator: the agents' real network (switches spanning hosts over
// tunnels on the simulated network, NLB members converging on one bucket map, the traffic
// generator) beside the real engine, configured by the daemon's real pusher.

const DRILLS = fileURLToPath(new URL('../../../drills/', import.meta.url));
const NLB = join(DRILLS, 'nlb-live-migration.yaml');

/** Windows NLB splits a multiple-host rule's client space into 60 buckets, shared by load weight. */
const BUCKETS = 60;

/** Three web VMs in an NLB cluster, clients at its virtual IP; host-3 dies while they connect. */
const CRASH = `
name: nlb-member-host-crash
description: A member's host dies under traffic; the others converge on the buckets without it.
farm:
  daemons: 3
  hosts: 3
  capacity: { memory: 8G }
  switches:
    - { name: ext, type: external }
workload:
  vms:
    - { name: web-1, memory: 256M, ha: high, host: host-1, switch: ext }
    - { name: web-2, memory: 256M, ha: high, host: host-2, switch: ext }
    - { name: web-3, memory: 256M, ha: none, host: host-3, switch: ext }
  nlb:
    - { name: web, vip: 10.0.0.100, switch: ext, members: [web-1, web-2, web-3] }
  traffic:
    - { name: clients, nlb: web, rate: 50, duration: 30s }
timeline:
  - create:
  - wait: { vmsRunning: all, within: 60s }
  - start-traffic: clients
  - hold: 2s
  - label: crash
    kill-agent: { host: host-3 }
  - hold: 3s
  - stop-traffic: clients
expect:
  - vmsRunning: { vms: [web-1, web-2], within: 1s, after: crash }
`;

/**
 * The same cluster; the tunnels between host-1 (where the clients are) and host-2 drop every
 * frame for 10 s, longer than a client's retransmissions last (250 ms doubling, 4 retries).
 */
const CUT = CRASH.replace('name: nlb-member-host-crash', 'name: nlb-tunnel-cut')
  .replace('ha: none', 'ha: high')
  .replace(
    '  - label: crash\n    kill-agent: { host: host-3 }\n  - hold: 3s\n',
    `  - label: cut
    slow-link: { from: host-1, to: host-2, drop: 1 }
  - slow-link: { from: host-2, to: host-1, drop: 1 }
  - hold: 10s
  - heal:
  - hold: 5s
`,
  )
  .replace(/expect:\n.*\n$/, 'expect:\n  - vmsRunning: { vms: [web-3], within: 1s, after: cut }\n');

describe('NLB in the farm simulator', function () {
  this.timeout(120_000);
  const out = mkdtempSync(join(tmpdir(), 'sim-nlb-'));
  after(() => rmSync(out, { recursive: true, force: true }));

  it('drills/nlb-live-migration.yaml passes, with its members converged on an even bucket map', async () => {
    const lines: string[] = [];
    const { report } = await runSimDrillFile(NLB, { out: join(out, 'full'), onStep: (l) => lines.push(l) });
    const failed = report.verdicts.filter((v) => !v.ok).map((v) => `${v.expectation}: ${v.reason}`);
    expect(failed, lines.join('\n')).to.deep.equal([]);
    // Clients did connect, through the switch, the tunnels and the members (60 s at 50 a second
    // is stopped after about 6 s: some hundreds).
    const traffic = report.observations.filter((o) => o.type === 'traffic').at(-1) as {
      started: number;
      completed: number;
    };
    expect(traffic.started).to.be.above(200);
    expect(traffic.completed).to.be.above(traffic.started - 5);
    // web-1 moved to host-2 and kept its member; three equal members hold 20 buckets each.
    const [web] = report.simulation!.nlb!;
    expect(web!.cluster).to.equal('web');
    expect(web!.converged).to.equal(true);
    expect(web!.members).to.deep.equal([
      { vm: 'web-1', host: 'host-2', state: 'converged', buckets: BUCKETS / 3 },
      { vm: 'web-2', host: 'host-2', state: 'converged', buckets: BUCKETS / 3 },
      { vm: 'web-3', host: 'host-3', state: 'converged', buckets: BUCKETS / 3 },
    ]);
  });

  it("a member's host crash: the others converge without it within the heartbeat threshold and share its buckets", async () => {
    const plan = loadDrill(CRASH, 'crash.yaml');
    const { report } = await runSimPlan(plan, 'crash.yaml', { out: join(out, 'crash') });
    expect(report.verdicts.filter((v) => !v.ok)).to.deep.equal([]);
    const [web] = report.simulation!.nlb!;
    // The dead host's member is gone with its host; two equal members hold 30 buckets each.
    expect(web!.converged).to.equal(true);
    expect(web!.members).to.deep.equal([
      { vm: 'web-1', host: 'host-1', state: 'converged', buckets: BUCKETS / 2 },
      { vm: 'web-2', host: 'host-2', state: 'converged', buckets: BUCKETS / 2 },
    ]);
    expect(report.simulation!.violations).to.deep.equal([]);
  });

  it('the re-convergence after the crash comes once the heartbeat threshold passes (5 periods of 100 ms unheard)', async () => {
    const plan = loadDrill(CRASH, 'crash.yaml');
    const { FarmSimulation } = await import('../src/farm.js');
    const { farmOptions } = await import('../src/drill/index.js');
    const { SimDrillRun } = await import('../src/drill/run.js');
    const { nlbMembers } = await import('../src/nlb-checks.js');
    const farm = new FarmSimulation(farmOptions(plan, 1));
    let obs;
    try {
      obs = await new SimDrillRun(plan, farm).run();
    } finally {
      farm.drillHandle().end();
    }
    const killed = obs.find((o) => o.type === 'fault' && o.what === 'kill -9 host-3')!.t;
    const [members] = [...nlbMembers(farm.hosts.values()).values()];
    for (const m of members!) {
      const last = m.status.lastConvergence!;
      expect(last.members).to.deep.equal([1, 2]);
      const after = last.finishedAtMs - (killed + 1_800_000_000_000);
      // A member is dropped five periods after it was last heard (its last heartbeat came up to
      // one period before the crash); then the others agree within a few heartbeats.
      expect(after).to.be.within(4 * 100, 5 * 100 + 500);
    }
  });

  it('the tunnels ride the simulated network: frames a cut link drops lose connections, and the cluster converges again after the heal', async () => {
    const plan = loadDrill(CUT, 'cut.yaml');
    expect(plan.steps.map((x) => x.kind)).to.include.members(['slow-link', 'heal']);
    const { report } = await runSimPlan(plan, 'cut.yaml', { out: join(out, 'cut') });
    expect(report.verdicts.filter((v) => !v.ok)).to.deep.equal([]);
    const traffic = report.observations.filter((o) => o.type === 'traffic').at(-1) as {
      lost: number;
      reset: number;
    };
    // The clients on host-1 reach web-2 only through the tunnel to host-2.
    expect(traffic.lost + traffic.reset).to.be.above(0);
    const [web] = report.simulation!.nlb!;
    expect(web!.converged).to.equal(true);
    expect(web!.members.map((m) => m.buckets)).to.deep.equal([BUCKETS / 3, BUCKETS / 3, BUCKETS / 3]);
  });

  it('the same seed replays the NLB drill identically; another seed is another run', async () => {
    const a = await runSimDrillFile(NLB, { quick: true, seed: 7, out: join(out, 'a') });
    const b = await runSimDrillFile(NLB, { quick: true, seed: 7, out: join(out, 'b') });
    expect(readFileSync(b.json, 'utf8')).to.equal(readFileSync(a.json, 'utf8'));
    const c = await runSimDrillFile(NLB, { quick: true, seed: 8, out: join(out, 'c') });
    expect(c.report.passed).to.equal(true);
    expect(JSON.stringify(c.report.observations)).not.to.equal(JSON.stringify(a.report.observations));
  });

  it('still refuses a drill without cluster storage, naming why', async () => {
    const plan = loadDrill(readFileSync(NLB, 'utf8'), NLB);
    const err = await runSimPlan({ ...plan, clusterStorage: false }, NLB, { out: join(out, 'refused') }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(UsageError);
    expect((err as Error).message).to.match(/clusterStorage: false/);
  });
});

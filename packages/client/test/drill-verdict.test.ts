import { expect } from 'chai';
import {
  availability,
  judge,
  loadDrill,
  runIntervals,
  twoHostViolations,
  type Observation,
} from '../src/drills/index.js';

const RUNNING = 'VM_STATE_RUNNING';
const OFF = 'VM_STATE_OFF';
const agent = (t: number, host: string, vm: string, state: string): Observation => ({
  t,
  type: 'agent',
  host,
  vm,
  state,
  event: 'state_changed',
});
const daemon = (t: number, vm: string, state: string, host: string): Observation => ({
  t,
  type: 'vm',
  vm,
  state,
  host,
});
const step = (t: number, index: number, kind: string, label?: string): Observation[] => [
  { t, type: 'step-start', index, kind, ...(label ? { label } : {}) },
  { t: t + 1, type: 'step-end', index, ok: true },
];

const DRILL = `name: d
farm: { daemons: 3, hosts: 2 }
workload:
  vms: [{ name: web, count: 2 }]
timeline:
  - create:
  - label: crash
    kill-agent: { host: host-1 }
expect:
  - vmsRunning: { within: 5s, after: crash }
  - leaderWithin: { within: 2s, after: crash }
`;

describe('drill verdicts (pure, from observations)', () => {
  it("finds a VM on two hosts at once from the agents' own events, by how long", () => {
    const obs = [
      agent(1000, 'host-1', 'web-1', RUNNING),
      agent(4000, 'host-2', 'web-1', 'VM_STATE_STARTING'),
      agent(5500, 'host-1', 'web-1', OFF),
      // A killed agent runs nothing from its death on.
      agent(2000, 'host-3', 'web-2', RUNNING),
      { t: 3000, type: 'agent-gone', host: 'host-3' } as Observation,
      agent(3500, 'host-2', 'web-2', RUNNING),
    ];
    expect(twoHostViolations(runIntervals(obs))).to.deep.equal([
      'VM web-1 ran on host-1 [1.0 s, 5.5 s] and on host-2 [4.0 s, the end]: 1.5 s at once',
    ]);
  });

  it('a handover with no overlap is not a violation; a paused or saved copy does not run', () => {
    const obs = [
      agent(1000, 'host-1', 'web-1', RUNNING),
      agent(2000, 'host-1', 'web-1', 'VM_STATE_SAVED'),
      agent(2000, 'host-2', 'web-1', 'VM_STATE_RESUMING'),
      agent(3000, 'host-1', 'web-2', 'VM_STATE_PAUSED'),
      agent(3000, 'host-2', 'web-2', RUNNING),
    ];
    expect(twoHostViolations(runIntervals(obs))).to.deep.equal([]);
  });

  it('measures how long a VM was down: a dead host runs nothing, an isolated host does not count', () => {
    const obs: Observation[] = [
      daemon(0, 'web-1', RUNNING, 'host-1'),
      agent(0, 'host-1', 'web-1', RUNNING),
      { t: 1000, type: 'agent-gone', host: 'host-1' },
      // The daemons still say Running on host-1 until they notice.
      daemon(3000, 'web-1', OFF, ''),
      daemon(4000, 'web-1', RUNNING, 'host-2'),
      agent(4200, 'host-2', 'web-1', RUNNING),
    ];
    expect(availability(obs, ['web-1'], 500)).to.deep.equal([{ vm: 'web-1', worstGapMs: 3200 }]);

    const isolated: Observation[] = [
      daemon(0, 'web-2', RUNNING, 'host-1'),
      agent(0, 'host-1', 'web-2', RUNNING),
      { t: 1000, type: 'fault', what: 'isolate host-1', host: 'host-1', on: true },
      agent(9000, 'host-1', 'web-2', OFF),
    ];
    expect(availability(isolated, ['web-2'], 1000)).to.deep.equal([
      { vm: 'web-2', worstGapMs: 0, downSince: 1000 },
    ]);
  });

  it('judges each expectation with the margin, and always the two-host and lost-write checks', () => {
    const plan = loadDrill(DRILL, 'd.yaml');
    const obs: Observation[] = [
      { t: 0, type: 'leader', leader: 'daemon-1' },
      ...step(0, 0, 'create'),
      daemon(100, 'web-1', RUNNING, 'host-1'),
      agent(100, 'host-1', 'web-1', RUNNING),
      daemon(100, 'web-2', RUNNING, 'host-2'),
      agent(100, 'host-2', 'web-2', RUNNING),
      { t: 100, type: 'write', name: 'web-1', ok: true },
      { t: 100, type: 'write', name: 'web-2', ok: true },
      { t: 500, type: 'write', name: 'w-1', ok: true },
      { t: 600, type: 'write', name: 'w-2', ok: false, error: 'UNAVAILABLE' },
      ...step(1000, 1, 'kill-agent', 'crash'),
      { t: 1001, type: 'agent-gone', host: 'host-1' },
      { t: 1200, type: 'leader', leader: '' },
      { t: 4000, type: 'leader', leader: 'daemon-2' },
      daemon(8000, 'web-1', RUNNING, 'host-2'),
      agent(8500, 'host-2', 'web-1', RUNNING),
      { t: 9000, type: 'final', vms: ['web-1', 'web-2'] },
    ];
    const v = judge(plan, obs);
    expect(v.map((x) => [x.kind, x.ok, x.line])).to.deep.equal([
      ['vmsRunning', false, 10],
      ['leaderWithin', false, 11],
      ['oneHost', true, 0],
      ['noWriteLost', false, 0],
      ['timeline', true, 0],
    ]);
    expect(v[0]!.reason).to.equal('longest down: web-1, 7.5 s, 2.5 s over the 5.0 s allowed');
    expect(v[1]!.reason).to.equal(
      'daemon-2 leads after 3.0 s (before: daemon-1), 1.0 s over the 2.0 s allowed',
    );
    expect(v[3]!.reason).to.equal('1 of 3 acknowledged writes missing: w-1');
  });

  it('the leader before a step is the one seen before it began, even in the same millisecond (virtual time)', () => {
    const plan = loadDrill(DRILL, 'd.yaml');
    const obs: Observation[] = [
      { t: 100, type: 'leader', leader: 'daemon-1' },
      ...step(0, 0, 'create'),
      // The simulator kills the leader in the step's own millisecond and sees it gone at once.
      { t: 5000, type: 'step-start', index: 1, kind: 'kill-leader', label: 'crash' },
      { t: 5000, type: 'leader', leader: '' },
      { t: 5000, type: 'step-end', index: 1, ok: true },
      { t: 6200, type: 'leader', leader: 'daemon-2' },
    ];
    const v = judge(plan, obs).find((x) => x.kind === 'leaderWithin')!;
    expect(v.reason).to.equal('daemon-2 leads after 1.2 s (before: daemon-1), 0.8 s under the 2.0 s allowed');
  });

  it('a step that failed fails the drill, naming the step and its line', () => {
    const plan = loadDrill(DRILL, 'd.yaml');
    const obs: Observation[] = [
      ...step(0, 0, 'create'),
      { t: 10, type: 'step-start', index: 1, kind: 'kill-agent', label: 'crash' },
      { t: 20, type: 'step-end', index: 1, ok: false, error: 'host-1 is on no host' },
      { t: 30, type: 'final', vms: [] },
    ];
    const timeline = judge(plan, obs).find((x) => x.kind === 'timeline')!;
    expect(timeline).to.include({ ok: false, line: 7 });
    expect(timeline.reason).to.equal('step 2 (kill-agent, line 7) failed: host-1 is on no host');
  });

  it('migration downtime, lost requests and fencing, each with its figure', () => {
    const plan = loadDrill(
      `name: m
farm: { daemons: 1, hosts: 2 }
workload:
  vms: [{ name: db }]
  nlb: []
timeline:
  - label: cut
    isolate: { host: host-1 }
expect:
  - migrationDowntime: { vm: db, below: 500ms }
  - fencedWithin: { host: host-1, within: 2s, after: cut }
`,
      'm.yaml',
    );
    const base: Observation[] = [
      agent(0, 'host-1', 'db', RUNNING),
      ...step(1000, 0, 'isolate', 'cut'),
      agent(2500, 'host-1', 'db', OFF),
      { t: 3000, type: 'final', vms: ['db'] },
    ];
    const mig = (downtimeMs: number, phase = 'MIGRATION_PHASE_COMPLETED'): Observation => ({
      t: 2000,
      type: 'migration',
      id: 'm1',
      vm: 'db',
      phase,
      downtimeMs,
      error: phase === 'MIGRATION_PHASE_COMPLETED' ? '' : 'target died',
      from: 'host-1',
      to: 'host-2',
    });
    const [slow, fenced] = judge(plan, [...base, mig(800)]);
    expect(slow).to.include({ ok: false, measured: '800 ms' });
    expect(slow!.reason).to.match(
      /^worst downtime 800 ms \(db, host-1 to host-2\), 300 ms over the 500 ms allowed/,
    );
    expect(fenced).to.include({ ok: true, measured: '1.5 s' });
    expect(judge(plan, [...base, mig(200)])[0]).to.include({ ok: true });
    expect(judge(plan, [...base, mig(0, 'MIGRATION_PHASE_FAILED')])[0]!.reason).to.equal(
      'migration m1 of db ended MIGRATION_PHASE_FAILED: target died',
    );
    expect(judge(plan, base)[0]!.reason).to.equal('no migration of db ran');
    const notFenced = judge(
      plan,
      base.filter((o) => !(o.type === 'agent' && o.state === OFF)),
    )[1]!;
    expect(notFenced).to.include({ ok: false });
    expect(notFenced.reason).to.equal('host-1 still ran db at the end');
  });
});

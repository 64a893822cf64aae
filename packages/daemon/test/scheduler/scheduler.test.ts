import { expect } from 'chai';
import {
  explainPlacement,
  fitScore,
  planPlacements,
  type SchedulerOptions,
} from '../../src/scheduler/index.js';
import { FarmBuilder } from '../fsm/build.js';
import { EXT_SWITCH, vmConfig, webCluster, type VmSpec } from '../fsm/fixtures.js';

const BINPACK: SchedulerOptions = { policy: 'binpack', vcpuRatio: 8 };
const SPREAD: SchedulerOptions = { policy: 'spread', vcpuRatio: 8 };

const explain = (b: FarmBuilder, spec: VmSpec, opts = BINPACK) => explainPlacement(b.s, vmConfig(spec), opts);
const reasonsOf = (b: FarmBuilder, spec: VmSpec, opts = BINPACK) =>
  Object.fromEntries(explain(b, spec, opts).verdicts.map((v) => [v.hostId, v.reasons]));

describe('placement filters say why they refuse a host', () => {
  it('memory: what is free after the root reserve and every VM placed, and what the VM needs', () => {
    // 8 GiB less a 2 GiB root reserve, 4.5 GiB placed: 1.5 GiB free.
    const b = new FarmBuilder()
      .host({ id: 'host-2', memGiB: 8, overheadMiB: 0 })
      .vm('v1', { name: 'big', memMiB: 4608 }, 'host-2');
    expect(reasonsOf(b, { name: 'web-1', memMiB: 4096 })).to.deep.equal({
      'host-2': ['1.5 GB free, 4 GB needed'],
    });
    // The per-VM overhead counts on top of the VM's memory.
    const c = new FarmBuilder().host({ id: 'h', memGiB: 4, reserveMiB: 2048, overheadMiB: 64 });
    expect(reasonsOf(c, { name: 'x', memMiB: 1984 })).to.deep.equal({ h: [] });
    expect(reasonsOf(c, { name: 'x', memMiB: 2048 })).to.deep.equal({ h: ['2 GB free, 2.1 GB needed'] });
  });

  it('state and maintenance: only Up hosts out of maintenance take VMs', () => {
    const b = new FarmBuilder()
      .host({ id: 'a', state: 'HOST_STATE_DOWN' })
      .host({ id: 'b', state: 'HOST_STATE_SUSPECT' })
      .host({ id: 'c', maintenance: true })
      .host({ id: 'd' });
    expect(reasonsOf(b, { name: 'x' })).to.deep.equal({
      a: ['host is Down'],
      b: ['host is Suspect'],
      c: ['in maintenance'],
      d: [],
    });
  });

  it("guest: the host's catalog and limits profile (Hyper-V 2008: 4 vCPUs, 64 GB per VM)", () => {
    const b = new FarmBuilder()
      .host({ id: 'old', guests: ['windows-server-2008-x64'] })
      .host({ id: 'new', profile: '2012', memGiB: 256 });
    // The 2012 profile allows 64, but the guest itself supports 4 under Hyper-V.
    expect(reasonsOf(b, { name: 'x', cpus: 8 })).to.deep.equal({
      new: ['Windows Server 2008 x64 supports at most 4 virtual processors, not 8'],
      old: ["8 virtual processors exceed the 2008 limits profile's 4 per VM"],
    });
    expect(reasonsOf(b, { name: 'x', memMiB: 80 * 1024 })).to.deep.equal({
      new: [],
      old: ["80 GB exceeds the 2008 limits profile's 64 GB per VM", '14 GB free, 80 GB needed'],
    });
    expect(reasonsOf(b, { name: 'x', guest: 'windows-xp-sp3-x86', cpus: 3 })).to.deep.equal({
      new: ['Windows XP Professional SP3 x86 supports at most 2 virtual processors, not 3'],
      old: ["guest OS 'windows-xp-sp3-x86' is not in its catalog"],
    });
    expect(reasonsOf(b, { name: 'x', guest: 'windows-xp-sp3-x86', memMiB: 6144 })).to.deep.equal({
      new: ['Windows XP Professional SP3 x86 addresses at most 4 GB'],
      old: ["guest OS 'windows-xp-sp3-x86' is not in its catalog"],
    });
  });

  it('virtual processors: at most the ratio per logical processor (8:1 by default)', () => {
    const b = new FarmBuilder()
      .host({ id: 'h', lp: 2, profile: '2012', memGiB: 64 })
      .vm('v1', { name: 'a', cpus: 4 }, 'h')
      .vm('v2', { name: 'b', cpus: 4 }, 'h')
      .vm('v3', { name: 'c', cpus: 4 }, 'h');
    expect(reasonsOf(b, { name: 'x', cpus: 4 })).to.deep.equal({ h: [] });
    b.vm('v4', { name: 'd', cpus: 1 }, 'h');
    expect(reasonsOf(b, { name: 'x', cpus: 4 })).to.deep.equal({
      h: ['17 virtual processors with this VM, above 8 per logical processor (16)'],
    });
    expect(reasonsOf(b, { name: 'x', cpus: 4 }, { ...BINPACK, vcpuRatio: 12 })).to.deep.equal({ h: [] });
  });

  it("VM count: at most the limits profile's VMs per host", () => {
    const b = new FarmBuilder().host({ id: 'h', memGiB: 1024, lp: 24, profile: '2008' });
    for (let i = 0; i < 192; i++) b.vm(`v${i}`, { name: `vm-${i}`, memMiB: 32 }, 'h');
    expect(reasonsOf(b, { name: 'x', memMiB: 32 }, { ...BINPACK, vcpuRatio: 12 })).to.deep.equal({
      h: ['holds 192 VMs, the most the 2008 limits profile allows'],
    });
  });

  it('switches: an adapter needs its switch to exist, and a host-local switch on that host', () => {
    const b = new FarmBuilder().host({ id: 'h1' }).host({ id: 'h2' });
    b.s.switches.set('s1', {
      id: 's1',
      name: 'ext',
      type: 'SWITCH_TYPE_EXTERNAL',
      hostId: '',
      macAgingSeconds: 300,
      hostAddress: '',
      createdAtMs: 0,
      revision: 1,
    });
    b.s.switches.set('s2', {
      id: 's2',
      name: 'lab',
      type: 'SWITCH_TYPE_PRIVATE',
      hostId: 'h2',
      macAgingSeconds: 300,
      hostAddress: '',
      createdAtMs: 0,
      revision: 2,
    });
    expect(reasonsOf(b, { name: 'x', switches: ['ext'] })).to.deep.equal({ h1: [], h2: [] });
    expect(reasonsOf(b, { name: 'x', switches: ['lab'] })).to.deep.equal({
      h1: ["switch 'lab' lives on host 'h2'"],
      h2: [],
    });
    expect(reasonsOf(b, { name: 'x', switches: ['nope'] })).to.deep.equal({
      h1: ["switch 'nope' does not exist"],
      h2: ["switch 'nope' does not exist"],
    });
  });

  it('anti-affinity: a hard class (or the old anti_affinity_group) never shares a host', () => {
    const b = new FarmBuilder()
      .host({ id: 'h1' })
      .host({ id: 'h2' })
      .vm('v1', { name: 'db-1', group: 'db' }, 'h1')
      .vm('v2', { name: 'web-1', classes: ['web'] }, 'h2');
    expect(reasonsOf(b, { name: 'db-2', classes: ['db'] })).to.deep.equal({
      h1: ["hard anti-affinity class 'db' is held by VM 'db-1'"],
      h2: [],
    });
    // Hard on either side: a VM asking softly does not join one that asked never to share.
    expect(reasonsOf(b, { name: 'web-2', classes: ['web'], hard: true })).to.deep.equal({
      h1: [],
      h2: ["hard anti-affinity class 'web' is held by VM 'web-1'"],
    });
  });
});

describe('placement chooses, scores and explains', () => {
  it("scores as Nomad's ScoreFit: binpack prefers the fuller host, spread the emptier", () => {
    // Half of the memory and of the processor capacity free: 20 - 2 * 10^0.5, over 18.
    expect(fitScore('binpack', 50, 100, 8, 16)).to.be.closeTo((20 - 2 * Math.sqrt(10)) / 18, 1e-12);
    expect(fitScore('spread', 50, 100, 8, 16)).to.be.closeTo((2 * Math.sqrt(10) - 2) / 18, 1e-12);
    expect(fitScore('binpack', 100, 100, 16, 16)).to.equal(1);
    expect(fitScore('spread', 0, 100, 0, 16)).to.equal(1);

    const b = new FarmBuilder()
      .host({ id: 'empty' })
      .host({ id: 'half' })
      .vm('v1', { name: 'a', memMiB: 7 * 1024 }, 'half');
    expect(explain(b, { name: 'x' }, BINPACK).chosen).to.equal('half');
    expect(explain(b, { name: 'x' }, SPREAD).chosen).to.equal('empty');
  });

  it('a soft class is kept apart while another host fits, and broken, with the reason, when none does', () => {
    const b = new FarmBuilder()
      .host({ id: 'h1', memGiB: 8 })
      .host({ id: 'h2', memGiB: 8 })
      .vm('v1', { name: 'web-1', classes: ['web'] }, 'h1');
    // Binpack would prefer h1 (fuller), but the soft class sends the VM to h2.
    const first = planPlacements(
      b.s,
      [{ vmId: 'v2', config: vmConfig({ name: 'web-2', classes: ['web'] }), pinnedHostId: '' }],
      BINPACK,
    );
    expect(first.placements.map((p) => [p.hostId, p.note])).to.deep.equal([['h2', '']]);

    // Fill h2: then only h1 fits, and the class is shared there, said so.
    b.vm('v3', { name: 'filler', memMiB: 5 * 1024 }, 'h2');
    const second = planPlacements(
      b.s,
      [{ vmId: 'v2', config: vmConfig({ name: 'web-2', classes: ['web'] }), pinnedHostId: '' }],
      BINPACK,
    );
    expect(second.placements.map((p) => [p.hostId, p.note])).to.deep.equal([
      ['h1', "soft anti-affinity class 'web' shared with VM 'web-1' on host 'h1': no host without it fit"],
    ]);
    const verdicts = explain(b, { name: 'web-2', classes: ['web'] }).verdicts;
    expect(verdicts.map((v) => [v.hostId, v.feasible])).to.deep.equal([
      ['h1', true],
      ['h2', false],
    ]);
    expect(verdicts[0]!.score).to.be.below(0);
  });

  it('a plan sees its own earlier placements: never two VMs into the room of one', () => {
    const b = new FarmBuilder()
      .host({ id: 'h1', memGiB: 8, overheadMiB: 0 })
      .host({ id: 'h2', memGiB: 4, overheadMiB: 0 });
    const items = ['a', 'b', 'c', 'd'].map((n) => ({
      vmId: n,
      config: vmConfig({ name: n, memMiB: 2048 }),
      pinnedHostId: '',
    }));
    const plan = planPlacements(b.s, items, BINPACK);
    // Binpack fills the small host first (2 GiB usable: full after one), then h1 (6 GiB: three).
    expect(plan.placements.map((p) => `${p.vmId}@${p.hostId}`)).to.deep.equal([
      'a@h2',
      'b@h1',
      'c@h1',
      'd@h1',
    ]);
    const more = planPlacements(
      b.s,
      [...items, { vmId: 'e', config: vmConfig({ name: 'e', memMiB: 2048 }), pinnedHostId: '' }],
      BINPACK,
    );
    expect(more.failures.map((f) => f.vmId)).to.deep.equal(['e']);
    expect(more.failures[0]!.message).to.equal(
      "no host can take VM 'e': h1: 0 MB free, 2 GB needed; h2: 0 MB free, 2 GB needed",
    );
  });

  it('a plan counts the placements of earlier plans still in the log as taken', () => {
    const b = new FarmBuilder()
      .host({ id: 'h1', memGiB: 8, overheadMiB: 0 })
      .host({ id: 'h2', memGiB: 4, overheadMiB: 0 });
    const item = (n: string) => ({ vmId: n, config: vmConfig({ name: n, memMiB: 2048 }), pinnedHostId: '' });
    // h2's 2 GiB usable is promised to a VM whose placement has not applied yet: binpack's
    // choice is h1, and once h1's 6 GiB are promised too, the VM fails as on a full farm.
    const inFlight = (n: number, hostId: string) =>
      Array.from({ length: n }, (_, i) => ({ hostId, config: vmConfig({ name: `p${i}`, memMiB: 2048 }) }));
    const plan = planPlacements(b.s, [item('a')], BINPACK, inFlight(1, 'h2'));
    expect(plan.placements.map((p) => `${p.vmId}@${p.hostId}`)).to.deep.equal(['a@h1']);
    const full = planPlacements(b.s, [item('a')], BINPACK, [...inFlight(1, 'h2'), ...inFlight(3, 'h1')]);
    expect(full.placements).to.deep.equal([]);
    expect(full.failures.map((f) => f.vmId)).to.deep.equal(['a']);
    // A placement on a host the farm no longer has counts for nothing.
    expect(planPlacements(b.s, [item('a')], BINPACK, inFlight(1, 'gone')).placements[0]!.hostId).to.equal(
      'h2',
    );
  });

  it('a pinned VM goes to its host or nowhere', () => {
    const b = new FarmBuilder().host({ id: 'h1' }).host({ id: 'h2', maintenance: true });
    const plan = planPlacements(
      b.s,
      [
        { vmId: 'a', config: vmConfig({ name: 'a' }), pinnedHostId: 'h2' },
        { vmId: 'b', config: vmConfig({ name: 'b' }), pinnedHostId: 'h9' },
        { vmId: 'c', config: vmConfig({ name: 'c' }), pinnedHostId: 'h1' },
      ],
      SPREAD,
    );
    expect(plan.placements.map((p) => `${p.vmId}@${p.hostId}`)).to.deep.equal(['c@h1']);
    expect(plan.failures).to.deep.equal([
      { vmId: 'a', message: "no host can take VM 'a': h2: in maintenance" },
      { vmId: 'b', message: "cannot place VM 'b' on host 'h9': no such host" },
    ]);
  });

  // The bug behind "kill -9 of the leader during creates" losing acknowledged creates: a new
  // leader, or one on a loaded machine, sees hosts Suspect for a while, and every create waiting
  // for placement then failed and its VM was deleted. Liveness comes back; the VM waits.
  it('a VM only a Suspect or Down host could take waits for it instead of failing', () => {
    const b = new FarmBuilder()
      .host({ id: 'down', memGiB: 16, state: 'HOST_STATE_DOWN' })
      .host({ id: 'small', memGiB: 4 })
      .host({ id: 'suspect', memGiB: 16, state: 'HOST_STATE_SUSPECT' })
      .host({ id: 'tired', memGiB: 16, state: 'HOST_STATE_SUSPECT', maintenance: true });
    const plan = planPlacements(
      b.s,
      [
        { vmId: 'a', config: vmConfig({ name: 'a', memMiB: 8192 }), pinnedHostId: '' },
        { vmId: 'b', config: vmConfig({ name: 'b', memMiB: 8192 }), pinnedHostId: 'down' },
        { vmId: 'c', config: vmConfig({ name: 'c', memMiB: 1024 }), pinnedHostId: '' },
        { vmId: 'd', config: vmConfig({ name: 'd', memMiB: 65536 }), pinnedHostId: '' },
        { vmId: 'e', config: vmConfig({ name: 'e', memMiB: 1024 }), pinnedHostId: 'tired' },
      ],
      BINPACK,
    );
    expect(plan.placements.map((p) => `${p.vmId}@${p.hostId}`)).to.deep.equal(['c@small']);
    expect(plan.waiting).to.deep.equal([
      {
        vmId: 'a',
        message:
          "waiting for a host: no Up host can take VM 'a'; down (Down), suspect (Suspect) could once Up again",
      },
      {
        vmId: 'b',
        message: "waiting for a host: no Up host can take VM 'b'; down (Down) could once Up again",
      },
    ]);
    // Too big for every host, Up or not; pinned to a host in maintenance: refused at once.
    expect(plan.failures.map((f) => f.vmId)).to.deep.equal(['d', 'e']);
  });

  it('on a large farm the refusal names a few hosts, then counts the rest by reason', () => {
    const b = new FarmBuilder();
    for (let i = 0; i < 8; i++)
      b.host({ id: `h${i}`, memGiB: 4, ...(i >= 6 ? { state: 'HOST_STATE_DOWN' as const } : {}) });
    const plan = planPlacements(
      b.s,
      [{ vmId: 'x', config: vmConfig({ name: 'x', memMiB: 8192 }), pinnedHostId: '' }],
      BINPACK,
    );
    expect(plan.failures[0]!.message).to.equal(
      "no host can take VM 'x': h0: 2 GB free, 8 GB needed; h1: 2 GB free, 8 GB needed; h2: 2 GB free, 8 GB needed; h3: 2 GB free, 8 GB needed; h4: 2 GB free, 8 GB needed; and 3 more hosts (of 8: 6 short of memory, 2 not Up)",
    );
  });

  it('explains every host and picks the host the plan would pick', () => {
    const b = new FarmBuilder()
      .host({ id: 'h1', memGiB: 8 })
      .host({ id: 'h2', memGiB: 32 })
      .host({ id: 'h3', state: 'HOST_STATE_DOWN' });
    const e = explain(b, { name: 'x', memMiB: 8192 }, SPREAD);
    expect(e.verdicts.map((v) => [v.hostId, v.feasible, v.reasons])).to.deep.equal([
      ['h1', false, ['6 GB free, 8 GB needed']],
      ['h2', true, []],
      ['h3', false, ['host is Down']],
    ]);
    expect(e.chosen).to.equal('h2');
    expect(
      planPlacements(
        b.s,
        [{ vmId: 'x', config: vmConfig({ name: 'x', memMiB: 8192 }), pinnedHostId: '' }],
        SPREAD,
      ).placements[0]!.hostId,
    ).to.equal('h2');
  });
});

describe('NLB clusters: one member per host, as a soft anti-affinity class', () => {
  // Windows NLB's guidance: one member of a cluster per host (its members share the host's
  // adapter to the switch, and a host failure would take out several at once). A host holding
  // another member is taken only when no other host fits, and placement says so.
  /** Hosts h1..h3 of 8 GiB (6 usable); web-1 on h1 and web-2 on h2, members of cluster 'web'; h2 fuller. */
  function farm(): FarmBuilder {
    const b = new FarmBuilder();
    for (const id of ['h1', 'h2', 'h3']) b.host({ id, memGiB: 8 });
    b.must(EXT_SWITCH);
    const members: [string, string, string | undefined][] = [
      ['v1', 'web-1', 'h1'],
      ['v2', 'web-2', 'h2'],
      ['v4', 'web-4', undefined],
      ['v5', 'web-5', undefined],
    ];
    for (const [i, [id, name, on]] of members.entries())
      b.vm(id, { name, switches: ['ext'] }, on).address(id, `10.0.0.${11 + i}/24`);
    b.vm('fill-2', { name: 'fill-2', memMiB: 2048 }, 'h2');
    b.must(webCluster(['v1', 'v2', 'v4', 'v5']));
    return b;
  }

  const move = (b: FarmBuilder, vmId: string) =>
    planPlacements(
      b.s,
      [{ vmId, config: b.s.vms.get(vmId)!.config, pinnedHostId: '' }],
      BINPACK,
      [],
      b.s.vms.get(vmId)!.hostId,
    ).placements.map((p) => [p.hostId, p.note]);

  it('a member moving off its host goes where no other member is, while one fits', () => {
    const b = farm();
    // Binpack prefers h2, the fullest, but web-2 is there: h3.
    expect(move(b, 'v1')).to.deep.equal([['h3', '']]);
  });

  it('shares a host with another member only when no other host fits, and says why', () => {
    const b = farm();
    b.vm('fill-3', { name: 'fill-3', memMiB: 5 * 1024 }, 'h3');
    expect(move(b, 'v1')).to.deep.equal([
      [
        'h2',
        "NLB cluster 'web' has member 'web-2' on host 'h2' too: no host without one fit (Windows NLB runs one member per host)",
      ],
    ]);
  });

  it('members placed in one plan go to different hosts', () => {
    const b = farm();
    const plan = planPlacements(
      b.s,
      ['v4', 'v5'].map((vmId) => ({ vmId, config: b.s.vms.get(vmId)!.config, pinnedHostId: '' })),
      BINPACK,
    );
    // h1 and h2 hold web-1 and web-2: the first goes to h3, the second shares a host.
    const hosts = plan.placements.map((p) => p.hostId);
    expect(hosts[0]).to.equal('h3');
    expect(hosts[1]).to.not.equal('h3');
    expect(plan.placements[1]!.note).to.match(/^NLB cluster 'web' has member /);
  });

  it('ExplainPlacement gives the reason on each host that holds another member, one point of score each', () => {
    const b = farm();
    const { verdicts, chosen } = explainPlacement(b.s, b.s.vms.get('v4')!.config, BINPACK, 'v4');
    expect(chosen).to.equal('h3');
    expect(Object.fromEntries(verdicts.map((v) => [v.hostId, v.reasons]))).to.deep.equal({
      h1: ["NLB cluster 'web' has member 'web-1' here (Windows NLB runs one member per host)"],
      h2: ["NLB cluster 'web' has member 'web-2' here (Windows NLB runs one member per host)"],
      h3: [],
    });
    expect(verdicts.every((v) => v.feasible)).to.equal(true);
    expect(verdicts[1]!.score).to.be.below(0);
  });
});

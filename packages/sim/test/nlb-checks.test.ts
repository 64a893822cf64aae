import { expect } from 'chai';
import type { NlbMemberStatus } from '@hyperfarm/agent';
import type { SimHost } from '../src/host.js';
import type { Violation } from '../src/invariants.js';
import { checkNlb, checkNlbConverged, convergedMap, nlbMembers } from '../src/nlb-checks.js';

// The NLB invariants on members as hosts report them (docs/simulation.md#invariants).

const BUCKETS = 60;

function member(vmId: string, priority: number, over: Partial<NlbMemberStatus> = {}): NlbMemberStatus {
  return {
    vmId,
    priority,
    state: 'converged',
    view: [1, 2],
    defaultHost: 1,
    // Two equal members: 30 buckets each (Windows NLB's 60 buckets shared by load weight).
    maps: [Array.from({ length: BUCKETS }, (_, b) => (b < BUCKETS / 2 ? 1 : 2))],
    lastConvergence: undefined,
    connections: 0,
    unconfirmedBuckets: 0,
    peers: [],
    warnings: [],
    ...over,
  };
}

/** A host whose network reports these members of cluster c1, their VMs running. */
function host(id: string, members: NlbMemberStatus[]): SimHost {
  return {
    id,
    network: {
      config: () => ({ revision: 1, switches: [], peers: [], nlbClusters: [{ id: 'c1' }] }),
      net: {
        nlbStatus: (c: string) => (c === 'c1' ? members : []),
        vmState: () => 'running',
      },
    },
  } as unknown as SimHost;
}

function check(hosts: SimHost[]): Violation[] {
  const v: Violation[] = [];
  checkNlb(hosts, 1_000, v);
  return v;
}

describe('NLB invariants', () => {
  it('two members converged on one view and map: no violation, and the cluster counts as converged', () => {
    const hosts = [host('h1', [member('a', 1)]), host('h2', [member('b', 2)])];
    expect(check(hosts)).to.deep.equal([]);
    expect(convergedMap([...nlbMembers(hosts).values()][0]!)?.view).to.deep.equal([1, 2]);
  });

  it('a member active on two hosts (a migration that left its copy behind) is nlb-member-twice', () => {
    const v = check([host('h1', [member('a', 1)]), host('h2', [member('a', 1), member('b', 2)])]);
    expect(v.map((x) => x.property)).to.deep.equal(['nlb-member-twice']);
    expect(v[0]!.detail).to.equal('NLB cluster c1: member a is active on h1 and h2');
  });

  it('a copy still converging or draining counts as active too', () => {
    for (const state of ['converging', 'draining'] as const) {
      const v = check([
        host('h1', [member('a', 1, { state })]),
        host('h2', [member('a', 1), member('b', 2)]),
      ]);
      expect(v.map((x) => x.property)).to.deep.equal(['nlb-member-twice']);
    }
  });

  it('a stopped copy does not count as active', () => {
    const v = check([
      host('h1', [member('a', 1, { state: 'stopped', view: [], maps: [null] })]),
      host('h2', [member('a', 1), member('b', 2)]),
    ]);
    expect(v).to.deep.equal([]);
  });

  it('a converged map that gives a bucket to a member outside the view is nlb-bucket-owner', () => {
    const map: number[] = Array.from({ length: BUCKETS }, (_, b) => (b < BUCKETS / 2 ? 1 : 2));
    map[7] = 3;
    const v = check([
      host('h1', [member('a', 1, { maps: [map] })]),
      host('h2', [member('b', 2, { maps: [map] })]),
    ]);
    expect(v.map((x) => x.property)).to.deep.equal(['nlb-bucket-owner']);
    expect(v[0]!.detail).to.match(
      /rule 0: bucket 7 belongs to priority 3, which is not in the converged view \[1, 2\]/,
    );
  });

  it('members on different maps, or one still converging, are not checked for owners', () => {
    const stray = Array.from({ length: BUCKETS }, () => 3);
    expect(
      check([host('h1', [member('a', 1, { maps: [stray] })]), host('h2', [member('b', 2)])]),
    ).to.deep.equal([]);
    expect(
      check([
        host('h1', [member('a', 1, { maps: [stray] })]),
        host('h2', [member('b', 2, { state: 'converging' })]),
      ]),
    ).to.deep.equal([]);
  });

  describe('once faults stop: nlb-not-converged', () => {
    /** The farm runs a (priority 1) and b (priority 2) of cluster c1. */
    const both = new Map([
      [
        'c1',
        new Map([
          ['a', 1],
          ['b', 2],
        ]),
      ],
    ]);
    const converged = (hosts: SimHost[], running = both) => {
      const v: Violation[] = [];
      checkNlbConverged(hosts, running, 1_000, v);
      return v;
    };

    it('members converged on one view of exactly the running members: no violation', () => {
      expect(converged([host('h1', [member('a', 1)]), host('h2', [member('b', 2)])])).to.deep.equal([]);
      // No member running: nothing to converge.
      expect(converged([], new Map([['c1', new Map()]]))).to.deep.equal([]);
    });

    it('members that never heard each other again (each converged alone) are nlb-not-converged', () => {
      const v = converged([
        host('h1', [member('a', 1, { view: [1], maps: [Array.from({ length: BUCKETS }, () => 1)] })]),
        host('h2', [member('b', 2, { view: [2], maps: [Array.from({ length: BUCKETS }, () => 2)] })]),
      ]);
      expect(v.map((x) => x.property)).to.deep.equal(['nlb-not-converged']);
      expect(v[0]!.detail).to.equal(
        'NLB cluster c1 has not converged over its running members (priorities 1, 2); members seen: a on h1 converged [1]; b on h2 converged [2]',
      );
    });

    it('a running member whose host reports it stopped, or not at all, is nlb-not-converged', () => {
      const lone = { view: [1], maps: [Array.from({ length: BUCKETS }, () => 1)] };
      const stopped = converged([
        host('h1', [member('a', 1, lone)]),
        host('h2', [member('b', 2, { state: 'stopped', view: [], maps: [null] })]),
      ]);
      expect(stopped.map((x) => x.detail)).to.deep.equal([
        'NLB cluster c1 has not converged over its running members (priorities 1, 2); not converged: b; members seen: a on h1 converged [1]; b on h2 stopped []',
      ]);
      const absent = converged([host('h1', [member('a', 1, lone)])]);
      expect(absent.map((x) => x.property)).to.deep.equal(['nlb-not-converged']);
    });

    it('a view that still counts a member whose VM no longer runs is nlb-not-converged', () => {
      const v = converged(
        [host('h1', [member('a', 1, { view: [1, 2] })])],
        new Map([['c1', new Map([['a', 1]])]]),
      );
      expect(v.map((x) => x.property)).to.deep.equal(['nlb-not-converged']);
    });
  });
});

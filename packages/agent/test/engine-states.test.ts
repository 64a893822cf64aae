import { expect } from 'chai';
import { status } from '@hyperfarm/api';
import type { HypervisorEngine } from '../src/engine/engine.js';
import { stateName, type VmAction, type VmState } from '../src/engine/states.js';
import { makeEngine, mib, vmConfig } from './helpers.js';

type Action = Exclude<VmAction, 'VM_ACTION_UNSPECIFIED'>;

/**
 * Hyper-V's RequestStateChange rules as docs/agent.md writes them, typed here by hand: not the
 * ACTION_RULES table the engine uses, so a wrong rule in that table fails these tests.
 */
const RULES: Record<Action, { from: readonly VmState[]; alreadyThere: readonly VmState[] }> = {
  VM_ACTION_START: {
    from: ['VM_STATE_OFF', 'VM_STATE_SAVED'],
    alreadyThere: ['VM_STATE_STARTING', 'VM_STATE_RUNNING', 'VM_STATE_RESUMING'],
  },
  VM_ACTION_STOP: { from: ['VM_STATE_RUNNING'], alreadyThere: ['VM_STATE_STOPPING', 'VM_STATE_OFF'] },
  VM_ACTION_TURN_OFF: {
    from: [
      'VM_STATE_STARTING',
      'VM_STATE_RUNNING',
      'VM_STATE_PAUSING',
      'VM_STATE_PAUSED',
      'VM_STATE_RESUMING',
      'VM_STATE_SAVED',
      'VM_STATE_STOPPING',
      'VM_STATE_RESETTING',
      'VM_STATE_RUNNING_CRITICAL',
      'VM_STATE_PAUSED_CRITICAL',
    ],
    alreadyThere: ['VM_STATE_OFF'],
  },
  VM_ACTION_SAVE: {
    from: ['VM_STATE_RUNNING', 'VM_STATE_PAUSED'],
    alreadyThere: ['VM_STATE_SAVING', 'VM_STATE_SAVED'],
  },
  VM_ACTION_PAUSE: {
    from: ['VM_STATE_RUNNING', 'VM_STATE_RUNNING_CRITICAL'],
    alreadyThere: ['VM_STATE_PAUSING', 'VM_STATE_PAUSED', 'VM_STATE_PAUSED_CRITICAL'],
  },
  VM_ACTION_RESUME: {
    from: ['VM_STATE_PAUSED', 'VM_STATE_PAUSED_CRITICAL'],
    alreadyThere: ['VM_STATE_RESUMING', 'VM_STATE_RUNNING'],
  },
  VM_ACTION_RESET: {
    from: ['VM_STATE_RUNNING', 'VM_STATE_PAUSED', 'VM_STATE_RUNNING_CRITICAL'],
    alreadyThere: ['VM_STATE_RESETTING'],
  },
};

const ACTIONS = Object.keys(RULES) as Action[];

/** Drives a fresh VM named 'web-1' into `state` on a virtual clock (I/O effects completed inline). */
/** Unknown is the farm's word for a VM it cannot see: no VM on an agent is ever in it. */
type AgentState = Exclude<VmState, 'VM_STATE_UNKNOWN'>;

function vmIn(state: AgentState): HypervisorEngine {
  const e = makeEngine();
  e.vms.create('vm-1', vmConfig('web-1'));
  const act = (a: VmAction) => e.power.change('vm-1', a);
  const completeIo = () => {
    for (const eff of e.takeEffects()) {
      if (eff.kind === 'save') eff.saved(eff.memory.stateHash(eff.deviceState));
    }
  };
  const reach: Record<AgentState, () => void> = {
    VM_STATE_UNSPECIFIED: () => undefined,
    VM_STATE_OFF: () => undefined,
    VM_STATE_STARTING: () => act('VM_ACTION_START'),
    VM_STATE_RUNNING: () => {
      act('VM_ACTION_START');
      e.tick(1000);
    },
    VM_STATE_PAUSING: () => {
      reach.VM_STATE_RUNNING();
      act('VM_ACTION_PAUSE');
    },
    VM_STATE_PAUSED: () => {
      reach.VM_STATE_PAUSING();
      e.tick(100);
    },
    VM_STATE_RESUMING: () => {
      reach.VM_STATE_PAUSED();
      act('VM_ACTION_RESUME');
    },
    VM_STATE_SAVING: () => {
      reach.VM_STATE_RUNNING();
      act('VM_ACTION_SAVE');
    },
    VM_STATE_SAVED: () => {
      reach.VM_STATE_SAVING();
      completeIo();
    },
    VM_STATE_STOPPING: () => {
      reach.VM_STATE_RUNNING();
      act('VM_ACTION_STOP');
    },
    VM_STATE_RESETTING: () => {
      reach.VM_STATE_RUNNING();
      act('VM_ACTION_RESET');
    },
    VM_STATE_RUNNING_CRITICAL: () => {
      reach.VM_STATE_RUNNING();
      e.health.reportStorage('vm-1', 'failed', 'I/O error');
    },
    VM_STATE_PAUSED_CRITICAL: () => {
      reach.VM_STATE_RUNNING();
      e.health.reportStorage('vm-1', 'full', 'no space left');
    },
  };
  reach[state]();
  expect(e.vms.get('vm-1').status!.state).to.equal(state);
  return e;
}

const STATES = [
  'VM_STATE_OFF',
  'VM_STATE_STARTING',
  'VM_STATE_RUNNING',
  'VM_STATE_PAUSING',
  'VM_STATE_PAUSED',
  'VM_STATE_RESUMING',
  'VM_STATE_SAVING',
  'VM_STATE_SAVED',
  'VM_STATE_STOPPING',
  'VM_STATE_RESETTING',
  'VM_STATE_RUNNING_CRITICAL',
  'VM_STATE_PAUSED_CRITICAL',
] as const;

/** Where each valid action leads, right away and once its transition has finished. */
const EXPECTED: Partial<Record<VmAction, { now: VmState; settled: VmState }>> = {
  VM_ACTION_STOP: { now: 'VM_STATE_STOPPING', settled: 'VM_STATE_OFF' },
  VM_ACTION_TURN_OFF: { now: 'VM_STATE_OFF', settled: 'VM_STATE_OFF' },
  VM_ACTION_SAVE: { now: 'VM_STATE_SAVING', settled: 'VM_STATE_SAVING' },
  VM_ACTION_RESUME: { now: 'VM_STATE_RESUMING', settled: 'VM_STATE_RUNNING' },
  VM_ACTION_RESET: { now: 'VM_STATE_RESETTING', settled: 'VM_STATE_RUNNING' },
};

describe('VM state transitions (RequestStateChange rules)', () => {
  for (const state of STATES) {
    for (const action of ACTIONS) {
      const rule = RULES[action];
      const valid = rule.from.includes(state);
      const repeat = rule.alreadyThere.includes(state);
      const label = `${action.replace('VM_ACTION_', '').toLowerCase()} from ${stateName(state)}`;
      if (valid) {
        it(`${label}: accepted`, () => {
          const e = vmIn(state);
          const after = e.power.change('vm-1', action).status!.state;
          expect(after).to.not.equal(state);
          const exp = EXPECTED[action];
          if (exp) expect(after).to.equal(exp.now);
          e.tick(5_000);
          if (exp) expect(e.vms.get('vm-1').status!.state).to.equal(exp.settled);
        });
      } else if (repeat) {
        it(`${label}: a harmless repeat`, () => {
          const e = vmIn(state);
          expect(e.power.change('vm-1', action).status!.state).to.equal(state);
        });
      } else {
        it(`${label}: refused with FAILED_PRECONDITION naming the VM and its state`, () => {
          const e = vmIn(state);
          expect(() => e.power.change('vm-1', action))
            .to.throw(
              `cannot ${action.replace('VM_ACTION_', '').toLowerCase().replace('_', ' ')} VM 'web-1': it is ${stateName(state)}`,
            )
            .with.property('code', status.FAILED_PRECONDITION);
        });
      }
    }
  }

  it('start from Off boots for the configured time, then runs with the integration services open', () => {
    const e = vmIn('VM_STATE_OFF');
    e.power.change('vm-1', 'VM_ACTION_START');
    e.tick(999);
    expect(e.vms.get('vm-1').status!.state).to.equal('VM_STATE_STARTING');
    e.tick(1);
    const vm = e.vms.get('vm-1');
    expect(vm.status!.state).to.equal('VM_STATE_RUNNING');
    expect(vm.status!.heartbeat).to.equal('HEARTBEAT_STATUS_OK');
    expect(e.vms.channelsOf('vm-1').every((c) => c.open)).to.equal(true);
  });

  it('stop is refused without the shutdown integration service', () => {
    const e = makeEngine();
    e.vms.create(
      'vm-2',
      vmConfig('legacy-1', { guestOs: 'other-x86', processor: { count: 1 }, integrationServices: false }),
    );
    e.power.change('vm-2', 'VM_ACTION_START');
    e.tick(2_000);
    expect(e.vms.channelsOf('vm-2').some((c) => c.open)).to.equal(false);
    expect(() => e.power.change('vm-2', 'VM_ACTION_STOP'))
      .to.throw("cannot stop VM 'legacy-1': its guest has no shutdown integration service")
      .with.property('code', status.FAILED_PRECONDITION);
  });

  it('a start without enough memory says how much is free and how much is needed', () => {
    const e = makeEngine();
    e.vms.create('big-1', vmConfig('big-1', { memoryBytes: mib(10 * 1024) }));
    e.vms.create('big-2', vmConfig('big-2', { memoryBytes: mib(8 * 1024) }));
    e.power.change('big-1', 'VM_ACTION_START');
    expect(() => e.power.change('big-2', 'VM_ACTION_START'))
      .to.throw(
        "cannot start VM 'big-2': it needs 8224 MiB (8192 MiB memory + 32 MiB overhead) but only 4064 MiB is free (16384 MiB host memory - 2048 MiB root reserve - 10272 MiB used)",
      )
      .with.property('code', status.RESOURCE_EXHAUSTED);
  });

  it('heartbeat: a hung guest shows Lost communication after the timeout, and OK when it answers again', () => {
    const e = vmIn('VM_STATE_RUNNING');
    e.takeEvents();
    e.health.setGuestResponsive('web-1', false);
    e.tick(2_999);
    expect(e.vms.get('vm-1').status!.heartbeat).to.equal('HEARTBEAT_STATUS_OK');
    e.tick(1);
    expect(e.vms.get('vm-1').status!.heartbeat).to.equal('HEARTBEAT_STATUS_LOST_COMMUNICATION');
    expect(e.takeEvents().map((ev) => ev.type)).to.include('heartbeat_lost');
    expect(() => e.power.change('vm-1', 'VM_ACTION_STOP')).to.throw(/does not answer/);
    e.health.setGuestResponsive('web-1', true);
    expect(e.vms.get('vm-1').status!.heartbeat).to.equal('HEARTBEAT_STATUS_OK');
  });

  it('heartbeat: a guest starved of CPU loses its heartbeat, and gets it back when the CPU returns', () => {
    const e = makeEngine({ logicalProcessors: 1 });
    const hog = { bootMs: 10, cpuDemandPercent: 100 };
    e.vms.create('hog', vmConfig('hog', { processor: { count: 1, relativeWeight: 10_000 }, workload: hog }));
    e.vms.create('meek', vmConfig('meek', { processor: { count: 1, relativeWeight: 1 }, workload: hog }));
    e.power.change('meek', 'VM_ACTION_START');
    e.tick(10);
    expect(e.vms.get('meek').status!.heartbeat).to.equal('HEARTBEAT_STATUS_OK');
    e.power.change('hog', 'VM_ACTION_START');
    e.tick(10);
    e.takeEvents();
    e.tick(4_000);
    expect(e.cpuReport().vms.get('meek')!.lp).to.be.below(0.001);
    expect(e.vms.get('meek').status!.heartbeat).to.equal('HEARTBEAT_STATUS_LOST_COMMUNICATION');
    expect(e.takeEvents().some((ev) => ev.type === 'heartbeat_lost' && ev.vmId === 'meek')).to.equal(true);
    expect(e.vms.get('hog').status!.heartbeat).to.equal('HEARTBEAT_STATUS_OK');
    e.power.change('hog', 'VM_ACTION_TURN_OFF');
    e.tick(100);
    expect(e.vms.get('meek').status!.heartbeat).to.equal('HEARTBEAT_STATUS_OK');
  });

  it('a failed disk makes the VM RunningCritical and it recovers when writes succeed again', () => {
    const e = vmIn('VM_STATE_RUNNING');
    e.takeEvents();
    e.health.reportStorage('vm-1', 'failed', 'EIO');
    expect(e.vms.get('vm-1').status!.state).to.equal('VM_STATE_RUNNING_CRITICAL');
    expect(e.takeEvents().map((ev) => ev.type)).to.include('critical');
    e.health.reportStorage('vm-1', 'ok');
    expect(e.vms.get('vm-1').status!.state).to.equal('VM_STATE_RUNNING');
  });

  it('fencing: a command with a stale generation is refused; a newer one is adopted', () => {
    const e = makeEngine();
    e.vms.create('vm-1', vmConfig('web-1'), 3);
    e.power.change('vm-1', 'VM_ACTION_START', 5);
    expect(e.vms.get('vm-1').status!.generation).to.equal(5);
    expect(() => e.power.change('vm-1', 'VM_ACTION_TURN_OFF', 4))
      .to.throw("cannot turn off VM 'web-1': stale generation 4, this host holds generation 5")
      .with.property('code', status.FAILED_PRECONDITION);
    expect(e.vms.get('vm-1').status!.state).to.equal('VM_STATE_STARTING');
    e.power.change('vm-1', 'VM_ACTION_START', 5); // idempotent repeat
  });

  it('lease: without renewal the host turns its VMs off by itself and refuses new starts', () => {
    const e = vmIn('VM_STATE_RUNNING');
    e.lease.grant('daemon-1', 2, 5_000);
    e.tick(4_000);
    e.lease.grant('daemon-1', 2, 5_000); // renewed at t=5000 → expires at 10000
    expect(e.lease.grant('daemon-0', 1, 60_000).accepted).to.equal(false);
    e.takeEvents();
    e.tick(4_999);
    expect(e.vms.get('vm-1').status!.state).to.equal('VM_STATE_RUNNING');
    e.tick(1);
    expect(e.vms.get('vm-1').status!.state).to.equal('VM_STATE_OFF');
    expect(e.vms.get('vm-1').status!.message).to.match(/lease expired/);
    expect(e.takeEvents().map((ev) => ev.type)).to.include('lease_expired');
    expect(() => e.power.change('vm-1', 'VM_ACTION_START')).to.throw(/lease expired/);
    e.lease.grant('daemon-1', 3, 5_000);
    e.power.change('vm-1', 'VM_ACTION_START');
  });
});

import { expect } from 'chai';
import { createLogger, type pb } from '@hyperfarm/api';
import { RaftArgumentError } from '@hyperfarm/raft';
import { ControllerRunner } from '../../src/edge/controller-runner.js';
import type { FarmContext } from '../../src/edge/farm-context.js';
import { Proposer } from '../../src/edge/proposer.js';
import { realTimers } from '../../src/edge/timers.js';
import { createCommands, VmCreator, type CreateAsk } from '../../src/edge/vm-creator.js';
import { FarmStateMachine, usableMemory, hostLoad } from '../../src/fsm/index.js';
import { FarmBuilder } from '../fsm/build.js';
import { vmConfig, type HostSpec } from '../fsm/fixtures.js';
import { agents } from './fake-agents.js';

const logger = createLogger({ program: 'test', id: 'creator', level: 'silent' });
const RAFT_MAX = 1024 * 1024;

interface Entry {
  text: string;
  release(): void;
}

/**
 * The leader's log in memory: each proposal is kept, and applied at once unless the log is
 * holding (then when released, in order). `before` runs just ahead of each apply: another
 * daemon's entry that commits first.
 */
function memoryLog(machine: FarmStateMachine) {
  let index = machine.appliedIndex;
  const entries: Entry[] = [];
  const log = {
    entries,
    holding: false,
    before: undefined as ((text: string) => void) | undefined,
    raft: {
      propose(data: Uint8Array): Promise<{ index: number; result: Uint8Array }> {
        const text = new TextDecoder().decode(data);
        expect(data.length, 'an entry under RaftNode 1 MiB limit').to.be.below(RAFT_MAX);
        return new Promise((resolve) => {
          const release = () => {
            log.before?.(text);
            index++;
            resolve({ index, result: machine.apply(data, index) });
          };
          entries.push({ text, release });
          if (!log.holding) release();
        });
      },
    },
  };
  return log;
}

/** A leader over `hosts` with the create path's group commit, and its controllers running. */
function leader(hosts: HostSpec[], policy: 'binpack' | 'spread' = 'binpack') {
  const machine = new FarmStateMachine();
  const b = new FarmBuilder(machine.state);
  for (const h of hosts) b.host(h);
  const log = memoryLog(machine);
  const proposer = new Proposer(log.raft, machine, logger);
  const scheduler = { policy, vcpuRatio: 8 };
  const runner = new ControllerRunner(machine, proposer, agents([]), realTimers, logger, {
    daemonId: 'd1',
    liveness: { intervalMs: 60_000, suspectAfterMs: 120_000, downAfterMs: 300_000 },
    leaseMs: 300_000,
    leaseMarginMs: 500,
    scheduler,
    placementBatch: 1_000,
    maxCalls: 256,
    maxMigrationsPerHost: 2,
  });
  runner.start(1);
  const ctx = { machine, proposer, runner, logger, scheduler } as unknown as FarmContext;
  return { machine, b, log, runner, creator: new VmCreator(ctx) };
}

let ids = 0;
const ask = (name: string, memMiB: number, extra: Partial<CreateAsk> = {}): CreateAsk => ({
  vmId: `vm-${++ids}`,
  opId: `op-${ids}`,
  config: vmConfig({ name, memMiB }),
  start: false,
  hostId: '',
  warning: '',
  ...extra,
});

interface Cmd {
  type: string;
  creates?: { vmId: string }[];
  placements?: { vmId: string; hostId: string }[];
}
const cmdsOf = (text: string) => (JSON.parse(text) as { cmds: Cmd[] }).cmds;
const commands = (text: string) => cmdsOf(text).map((c) => c.type);

/** No host holds more memory than it can give its VMs. */
function expectNoOvercommit(machine: FarmStateMachine): void {
  for (const host of machine.state.hosts.values())
    expect(hostLoad(machine.state, host).memoryBytes, host.id).to.be.at.most(usableMemory(host));
}

async function until(what: string, check: () => boolean): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

// Hosts of 4 GiB less a 2 GiB root reserve: room for one 1.5 GiB VM (plus 32 MiB overhead) each.
const ONE_EACH: HostSpec[] = [
  { id: 'a1', memGiB: 4 },
  { id: 'a2', memGiB: 4 },
];

describe('the create path: creates of one turn committed together with their placements', () => {
  it('puts the creates of one turn and the plan that places them in one vm.create_compact command', async () => {
    const { machine, log, runner, creator } = leader([
      { id: 'a1', memGiB: 64 },
      { id: 'a2', memGiB: 64 },
    ]);
    try {
      const ops = await Promise.all(['w1', 'w2', 'w3'].map((n) => creator.create(ask(n, 512))));
      expect(log.entries.map((e) => commands(e.text))).to.deep.equal([['vm.create_compact']]);
      const [cmd] = cmdsOf(log.entries[0]!.text);
      expect(cmd!.creates).to.have.length(3);
      expect(cmd!.placements!.map((p) => p.vmId)).to.have.members(cmd!.creates!.map((c) => c.vmId));
      // Placed by the entry that created them: the answer already says where.
      for (const op of ops) {
        const vm = machine.state.vms.get(op.targetId!)!;
        expect(vm.hostId).to.be.oneOf(['a1', 'a2']);
        expect(op.message).to.equal(`placed on host '${vm.hostId}'; creating the VM there`);
      }
      expectNoOvercommit(machine);
    } finally {
      runner.stop();
    }
  });

  it('writes each command as the proposer would encode it (the creates encoded once, by the create path)', async () => {
    const asks = [ask('e1', 512, { rid: 'create-vm:e1' }), ask('e2', 256, { hostId: 'a2', start: true })];
    const placements = [{ vmId: asks[0]!.vmId, hostId: 'a1', note: '', score: 0 }];
    const [made] = createCommands(asks, placements);
    expect(made!.json.join('')).to.equal(JSON.stringify(made!.cmd));
    // Through the proposer, both ways give the same entry bytes.
    const texts: string[] = [];
    const raft = {
      propose: (data: Uint8Array) => {
        texts.push(new TextDecoder().decode(data));
        return Promise.reject(new RaftArgumentError('data', 'held by the test'));
      },
    };
    const proposer = new Proposer(raft, new FarmStateMachine(), logger, {
      timers: { ...realTimers, now: () => 7 },
    });
    await proposer.submit(made!.cmd, 'r1').catch(() => undefined);
    await proposer.submitEncoded(made!.json, 'r1').catch(() => undefined);
    expect(texts).to.have.length(2);
    expect(texts[1]).to.equal(texts[0]);
    expect(JSON.parse(texts[0]!)).to.deep.equal({ v: 1, cmds: [{ rid: 'r1', t: 7, ...made!.cmd }] });
  });

  it('answers two creates with the same request id in one turn with one VM and its operation', async () => {
    const { machine, runner, creator } = leader(ONE_EACH);
    try {
      const [x, y] = await Promise.all([
        creator.create(ask('same', 512, { rid: 'create-vm:r1' })),
        creator.create(ask('same', 512, { rid: 'create-vm:r1' })),
      ]);
      expect(y).to.deep.equal(x);
      expect([...machine.state.vms.values()].map((v) => v.config.name)).to.deep.equal(['same']);
      // And in a later turn too, as every create with a request id (the state machine's dedupe).
      const again = await creator.create(ask('same', 512, { rid: 'create-vm:r1' }));
      expect(again.id).to.equal(x!.id);
      expect(machine.state.vms.size).to.equal(1);
    } finally {
      runner.stop();
    }
  });

  it('refuses a placement the committed state no longer has room for, and the controller places the VM on another host', async () => {
    const { machine, b, log, runner, creator } = leader(ONE_EACH);
    try {
      // Another entry commits first and takes the room the plan chose.
      let intruder = '';
      log.before = (text) => {
        if (intruder || !text.includes('"type":"vm.create_compact"')) return;
        const chosen = cmdsOf(text)[0]!.placements![0]!.hostId;
        intruder = chosen;
        b.vm('intruder', { name: 'intruder', memMiB: 1536 }, chosen);
      };
      const op = await creator.create(ask('late', 1536));
      expect(machine.state.vms.get(op.targetId!)!.hostId, 'refused on commit').to.equal('');
      await until('the controller places it', () => machine.state.vms.get(op.targetId!)!.hostId !== '');
      expect(machine.state.vms.get(op.targetId!)!.hostId).to.equal(intruder === 'a1' ? 'a2' : 'a1');
      expectNoOvercommit(machine);
    } finally {
      runner.stop();
    }
  });

  it('counts the placements still in the log: plans made back to back do not pick the same room', async () => {
    const { machine, log, runner, creator } = leader(ONE_EACH);
    try {
      log.holding = true;
      const first = creator.create(ask('first', 1536));
      await until('the first entry proposed', () => log.entries.length === 1);
      const second = creator.create(ask('second', 1536));
      await until('the second entry proposed', () => log.entries.length === 2);
      const hostOf = (text: string) => cmdsOf(text)[0]!.placements![0]?.hostId;
      const [h1, h2] = log.entries.map((e) => hostOf(e.text));
      expect(h1).to.be.oneOf(['a1', 'a2']);
      expect(h2, 'the second plan saw the first').to.be.oneOf(['a1', 'a2']).and.not.equal(h1);
      for (const e of log.entries) e.release();
      const ops = await Promise.all([first, second]);
      expect(ops.map((op) => machine.state.vms.get(op.targetId!)!.hostId)).to.deep.equal([h1, h2]);
      expectNoOvercommit(machine);
    } finally {
      runner.stop();
    }
  });

  it('splits a batch bigger than one entry in order, each under 1 MiB, and places every VM', async () => {
    const { machine, log, runner, creator } = leader([
      { id: 'a1', memGiB: 1024, lp: 128, profile: '2012' },
      { id: 'a2', memGiB: 1024, lp: 128, profile: '2012' },
    ]);
    try {
      const labels = { note: 'x'.repeat(200) };
      const asks = Array.from({ length: 1500 }, (_, i) => {
        const a = ask(`big-${i}`, 256);
        return { ...a, config: { ...a.config, labels } };
      });
      const ops: pb.Operation[] = await Promise.all(asks.map((a) => creator.create(a)));
      expect(log.entries.length, 'entries').to.be.above(1);
      // In order, each command with the placements of its own creates.
      // The leader's controllers propose too (the fake agents create the placed VMs, whose
      // reports follow): on a loaded machine their commands land between the creates' entries.
      const cmds = log.entries.flatMap((e) => cmdsOf(e.text)).filter((c) => c.creates);
      expect(cmds.length, 'commands').to.be.above(1);
      expect(cmds.every((c) => c.type === 'vm.create_compact')).to.equal(true);
      expect(cmds.flatMap((c) => c.creates!.map((x) => x.vmId))).to.deep.equal(asks.map((a) => a.vmId));
      for (const c of cmds)
        expect(c.placements!.map((p) => p.vmId)).to.have.members(c.creates!.map((x) => x.vmId));
      expect(ops.every((op) => machine.state.vms.get(op.targetId!)!.hostId !== '')).to.equal(true);
      expectNoOvercommit(machine);
    } finally {
      runner.stop();
    }
  });
});

import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status, statusOf, type pb } from '@hyperfarm/api';
import {
  AgentProc,
  Coordinator,
  RunChecker,
  until,
  type Decision,
  type MigrationPlan,
  type Step,
} from './migration-harness.js';
import { mib } from './helpers.js';

/**
 * The handover under faults, with real agent processes: a fault at every step of a migration
 * (kill the source or the target, freeze either for longer than the deadlines then let it go
 * on, drop the target's final answer, kill the coordinator that plays the daemon) and, after
 * it, the VM runs on exactly one host; a checker following every agent's own event stream
 * never sees it run on two. `npm test` runs a representative set; the whole matrix runs with
 * MIGRATION_FAULTS=all (npm run test:migration-faults).
 */

type Fault =
  'kill-source' | 'kill-target' | 'stop-source' | 'stop-target' | 'drop-answer' | 'kill-coordinator';

const STEPS: Step[] = ['transfer', 'stop-copy', 'prepared', 'commit-target', 'commit-source'];
const FAULTS: Fault[] = ['kill-source', 'kill-target', 'stop-source', 'stop-target', 'kill-coordinator'];
const ALL: [Step, Fault][] = [
  ...STEPS.flatMap((s) => FAULTS.map((f): [Step, Fault] => [s, f])),
  ['commit-target', 'drop-answer'],
];
/** The representative set: each fault once, at the step where it hurt before the fix. */
const SOME: [Step, Fault][] = [
  ['commit-target', 'drop-answer'],
  ['commit-target', 'stop-target'],
  ['stop-copy', 'kill-source'],
  ['transfer', 'stop-source'],
  ['prepared', 'kill-coordinator'],
  ['commit-source', 'kill-target'],
];

/** The pull's deadline: a frozen host is given up after half of it; freezes last longer. */
const DEADLINE_MS = 2_000;
const FREEZE_MS = 3_000;

class CoordinatorKilled extends Error {}

describe('migration handover under faults (real agent processes)', function () {
  this.timeout(120_000);
  let dir: string;
  let a: AgentProc;
  let b: AgentProc;
  let checker: RunChecker;
  let n = 0;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hf-mig-faults-'));
    const args = ['--cluster-storage-path', join(dir, 'cluster'), '--memory-mib', '8192'];
    a = new AgentProc('host-a', dir, args);
    b = new AgentProc('host-b', dir, args);
    await Promise.all([a.start(), b.start()]);
    checker = new RunChecker();
    checker.follow(a);
    checker.follow(b);
  });

  after(async () => {
    checker?.close();
    await Promise.all([a?.close(), b?.close()]);
    rmSync(dir, { recursive: true, force: true });
  });

  const matrix = process.env['MIGRATION_FAULTS'] === 'all' ? ALL : SOME;
  for (const kind of ['MIGRATION_KIND_LIVE', 'MIGRATION_KIND_QUICK'] as const) {
    // A quick migration stops the VM at once: its only round is the stop-and-copy.
    const cases = kind === 'MIGRATION_KIND_LIVE' ? matrix : matrix.filter(([s]) => s !== 'transfer');
    for (const [step, fault] of matrix === ALL ? cases : cases.slice(0, 2)) {
      it(`${kind === 'MIGRATION_KIND_LIVE' ? 'live' : 'quick'}: ${fault} at ${step}`, async () => {
        const vmId = `vm-${++n}`;
        await createRunning(a, vmId);
        const plan: MigrationPlan = {
          id: `m-${n}`,
          vmId,
          source: a,
          target: b,
          sourceGeneration: 1,
          kind,
          deadlineMs: DEADLINE_MS,
          holdMs: 60_000,
        };
        const pending: Promise<unknown>[] = [];
        const inject = async () => {
          const host = fault.endsWith('source') ? a : b;
          switch (fault) {
            case 'kill-source':
            case 'kill-target':
              await host.kill();
              checker.forgetHost(host.id);
              pending.push(host.start().then(() => checker.follow(host)));
              return;
            case 'stop-source':
            case 'stop-target':
              host.stop();
              pending.push(new Promise((r) => setTimeout(r, FREEZE_MS)).then(() => host.cont()));
              return;
            case 'drop-answer':
              // The target commits and is frozen before its answer is read: the answer is lost.
              await b.c.commitMigration({
                migrationId: plan.id,
                vmId,
                targetGeneration: 2,
                role: 'MIGRATION_ROLE_TARGET',
                reason: '',
              });
              b.stop();
              pending.push(new Promise((r) => setTimeout(r, FREEZE_MS)).then(() => b.cont()));
              return;
            case 'kill-coordinator':
              throw new CoordinatorKilled();
          }
        };
        const log = new Map<string, Decision>();
        let fired = false;
        const coordinator = new Coordinator(log, async (s) => {
          if (s !== step || fired) return;
          fired = true;
          await inject();
        });
        let decision: Decision;
        try {
          decision = await coordinator.run(plan);
        } catch (err) {
          if (!(err instanceof CoordinatorKilled)) throw err;
          // A new leader: it knows only what the log holds.
          decision = await new Coordinator(log).finish(plan);
        }
        await Promise.all(pending);
        expect(fired, `the migration never reached ${step}`).to.equal(true);

        // What the daemon's reconciler then does: the VM runs where the decision put it.
        const home = decision === 'commit' ? b : a;
        const away = home === a ? b : a;
        const generation = decision === 'commit' ? 2 : 1;
        await until(`${vmId} to run on ${home.id}`, 30_000, async () => {
          const vm = await home.c.getVm({ vmId });
          expect(vm.status!.generation).to.equal(generation);
          if (vm.status!.state === 'VM_STATE_OFF')
            await home.c.changeVmState({ vmId, action: 'VM_ACTION_START', generation });
          return vm.status!.state === 'VM_STATE_RUNNING' || undefined;
        });
        // The other host has no copy, and holds no memory for it.
        const other = await away.c.getVm({ vmId }).catch((e: unknown) => statusOf(e));
        expect(other, `${away.id} still has ${vmId}`).to.equal(status.NOT_FOUND);
        await until(`${away.id} to hold no memory for ${vmId}`, 10_000, async () => {
          const vms = (await away.c.listVms({})).vms.filter((v) => v.status!.state !== 'VM_STATE_OFF');
          const used = (await away.c.getHostInfo({})).usage!.memoryUsedBytes;
          return (
            used === vms.reduce((sum, v) => sum + v.status!.memoryAssignedBytes + mib(32), 0) || undefined
          );
        });
        await until(
          `the checker to see ${vmId} on ${home.id}`,
          10_000,
          () => checker.hostsRunning(vmId).join() === home.id || undefined,
        );
        expect(checker.violations).to.deep.equal([]);
        // Leave the host for the next case.
        await home.c.changeVmState({ vmId, action: 'VM_ACTION_TURN_OFF', generation });
        await home.c.deleteVm({ vmId, generation });
      });
    }
  }
});

/** A busy VM: 256 MiB, dirtying its 64 MiB working set, so that a live migration takes rounds. */
async function createRunning(host: AgentProc, vmId: string): Promise<pb.Vm__Output> {
  await host.c.createVm({
    vmId,
    generation: 1,
    config: {
      name: vmId,
      processor: { count: 1 },
      memoryBytes: mib(256),
      guestOs: 'windows-server-2008-x64',
      integrationServices: true,
      workload: { bootMs: 50, workingSetBytes: mib(64), dirtyPagesPerSecond: 4_000, cpuDemandPercent: 20 },
    },
  });
  await host.c.changeVmState({ vmId, action: 'VM_ACTION_START', generation: 1 });
  return until(`${vmId} running`, 10_000, async () => {
    const vm = await host.c.getVm({ vmId });
    return vm.status!.state === 'VM_STATE_RUNNING' ? vm : undefined;
  });
}

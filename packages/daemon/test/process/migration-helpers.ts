import { expect } from 'chai';
import { join } from 'node:path';
import { createClient, hyperfarmProto, promiseClient, type pb } from '@hyperfarm/api';
import { RunChecker, type AgentProc } from '../../../agent/test/migration-harness.js';
import { ProcessFarm, until, vmSpec, type Cluster } from './harness.js';

/**
 * What the daemon's migration tests stand on: a farm of real processes whose agents share one
 * cluster storage folder, and a checker that follows every agent's own event stream (never the
 * daemon's view) and records the moment one VM runs on two hosts.
 */

export type Agent = ReturnType<typeof promiseClient<pb.AgentServiceClient>>;

export const MIB = 1024 * 1024;

export class MigrationFarm {
  readonly checker = new RunChecker();
  private readonly agents = new Map<string, { raw: pb.AgentServiceClient; c: Agent }>();

  private constructor(readonly farm: ProcessFarm) {}

  static async start(daemons: number, daemonArgs: string[], hosts: string[]): Promise<MigrationFarm> {
    const mf = new MigrationFarm(await ProcessFarm.start({ daemons, daemonArgs }));
    try {
      for (const id of hosts)
        mf.follow(id, (await mf.farm.startAgent(id, 1, mf.agentArgs()))[0]!.grpcAddress);
      await until(`${hosts.length} hosts Up`, 60_000, async () => {
        const { hosts: up } = await mf.c().listHosts({ state: 'HOST_STATE_UP' });
        return up.length === hosts.length || undefined;
      });
    } catch (err) {
      await mf.stop();
      throw err;
    }
    return mf;
  }

  agentArgs(): string[] {
    return ['--cluster-storage-path', join(this.farm.dir, 'cluster'), '--memory-mib', '8192'];
  }

  /** A client of the daemon that leads now (any live one forwards writes). */
  c(daemonId = this.farm.liveDaemons()[0]!): Cluster {
    return this.farm.client(daemonId);
  }

  agent(hostId: string): Agent {
    return this.agents.get(hostId)!.c;
  }

  private follow(hostId: string, address: string): void {
    this.agents.get(hostId)?.raw.close();
    const raw = createClient(hyperfarmProto().hyperfarm.v1.AgentService, address);
    this.agents.set(hostId, { raw, c: promiseClient(raw) });
    this.checker.follow({ id: hostId, raw } as unknown as AgentProc);
  }

  async killAgent(hostId: string): Promise<void> {
    await this.farm.killAgent(hostId);
    this.checker.forgetHost(hostId);
  }

  async restartAgent(hostId: string): Promise<void> {
    this.follow(hostId, (await this.farm.restartAgent(hostId))[0]!.grpcAddress);
  }

  /** A VM created on `hostId` through the daemon, started unless `off`. */
  async createVm(
    name: string,
    hostId: string,
    opts: { off?: boolean; priority?: pb.HaPriority; busy?: boolean; group?: string } = {},
  ): Promise<pb.Vm__Output> {
    const c = this.c();
    const config: pb.VmConfig = {
      ...vmSpec(name, 256),
      haPriority: opts.priority ?? 'HA_PRIORITY_MEDIUM',
      antiAffinityGroup: opts.group ?? '',
      // A busy guest dirties its working set, so a live migration takes rounds.
      workload: opts.busy
        ? { bootMs: 200, workingSetBytes: 64 * MIB, dirtyPagesPerSecond: 4_000, cpuDemandPercent: 20 }
        : { bootMs: 200 },
    };
    const op = await c.createVm({ config, hostId, start: !opts.off });
    return (await this.done(op)).vm!;
  }

  /** Waits for an operation to end; returns it as it ended. */
  async done(op: pb.Operation__Output, ms = 90_000): Promise<pb.Operation__Output> {
    return until(`operation ${op.id} (${op.kind}) to end`, ms, async () => {
      const o = await this.c().waitOperation({ id: op.id, timeoutMs: 5_000 }, { timeoutMs: 10_000 });
      return o.done ? o : undefined;
    });
  }

  async ok(op: pb.Operation__Output, ms?: number): Promise<pb.Operation__Output> {
    const o = await this.done(op, ms);
    expect(o.error, `${o.kind}: ${o.message}`).to.equal(null);
    return o;
  }

  async changeState(vmId: string, action: pb.VmAction): Promise<pb.Vm__Output> {
    return (await this.ok(await this.c().changeVmState({ id: vmId, action }))).vm!;
  }

  /** Waits until the farm and the host agree: the VM is `state` on `hostId`, at `generation`. */
  async settledOn(
    vmId: string,
    hostId: string,
    state: pb.VmState,
    generation?: number,
  ): Promise<pb.Vm__Output> {
    return until(`VM ${vmId} ${state} on ${hostId}`, 60_000, async () => {
      const vm = await this.c().getVm({ id: vmId });
      if (vm.status!.hostId !== hostId || vm.status!.state !== state) return undefined;
      if (generation !== undefined && vm.status!.generation !== generation) return undefined;
      const there = await this.agent(hostId).getVm({ vmId });
      return there.status!.state === state && there.status!.generation === vm.status!.generation
        ? vm
        : undefined;
    });
  }

  /** Exactly one host has the VM: the others answer NOT_FOUND. */
  async onlyOn(vmId: string, hostId: string, hosts: string[]): Promise<void> {
    for (const h of hosts) {
      if (h === hostId) continue;
      await until(`${h} to have no copy of ${vmId}`, 30_000, async () => {
        const code = await this.agent(h)
          .getVm({ vmId })
          .then(
            () => 0,
            (e: { code?: number }) => e.code,
          );
        return code === 5 || undefined; // NOT_FOUND
      });
    }
  }

  async stop(): Promise<void> {
    this.checker.close();
    for (const a of this.agents.values()) a.raw.close();
    await this.farm.stop();
  }
}

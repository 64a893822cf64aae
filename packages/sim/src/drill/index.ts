/**
 * `hyperfarm drill run --sim FILE`: a drill file played in the farm simulator, at the scale the
 * file sets, in farm time, judged by the same verdicts and written as the same report as a run
 * on real processes, with the seed and the simulator's invariant violations added.
 *
 * This lives here, not in @hyperfarm/client, because the simulator depends on the client's drill
 * format, verdicts and report: the client's CLI loads this module by name at run time, so the
 * packages' graph stays one way (sim -> client -> api).
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  buildReport,
  judge,
  loadDrill,
  UsageError,
  writeReport,
  type DrillOutcome,
  type Plan,
  type RunSimDrill,
  type SimDrillOptions,
  type Verdict,
} from '@hyperfarm/client';
import { LIVENESS_PROFILES } from '@hyperfarm/daemon';
import { RAFT_PROFILES } from '@hyperfarm/raft';
import { VirtualClock } from '../clock.js';
import { FarmSimulation, SMALL, type FarmOptions } from '../farm.js';
import { DEFAULT_SHAPE } from '../host.js';
import { SimDrillRun } from './run.js';

const MIB = 1024 ** 2;

/** Whether a drill uses the network: switches, VMs on them, NLB clusters, traffic. */
export function usesNetwork(plan: Plan): boolean {
  return (
    plan.switches.length > 0 ||
    plan.nlb.length > 0 ||
    plan.traffic.length > 0 ||
    plan.vms.some((v) => v.switch) ||
    plan.steps.some((s) => ['start-traffic', 'mark-traffic', 'stop-traffic'].includes(s.kind))
  );
}

/** What a drill asks that the simulator cannot play yet, one reason each (empty: it can play it). */
export function unsupported(plan: Plan): string[] {
  const why: string[] = [];
  if (!plan.clusterStorage) why.push('clusterStorage: false (every simulated host reaches cluster storage)');
  return why;
}

/**
 * The simulated farm of a drill: its daemons and hosts (each host's memory and processors, the
 * agent's default root reserve and per-VM overhead) with the daemon's timing profiles, as
 * `drill run` starts real processes with `--liveness-profile` and, for fast, `--raft-profile fast`.
 */
export function farmOptions(plan: Plan, seed: number): FarmOptions {
  const raft = RAFT_PROFILES[plan.timing];
  const live = LIVENESS_PROFILES[plan.timing];
  const shapes = plan.hosts.map((h) => ({
    ...DEFAULT_SHAPE,
    logicalProcessors: h.cpus,
    memoryBytes: h.memoryMib * MIB,
  }));
  return {
    ...SMALL,
    seed,
    daemons: plan.daemons,
    hosts: plan.hosts.length,
    vms: 0,
    faults: false,
    converge: false,
    moves: false,
    shape: shapes[0]!,
    hostShapes: shapes,
    // The hosts' virtual networks cost a sync of every VM's adapters every 250 ms: only when used.
    network: usesNetwork(plan),
    timing: {
      ...SMALL.timing,
      tickMs: raft.tickMs,
      electionTick: raft.electionTick,
      heartbeatTick: raft.heartbeatTick,
      liveness: {
        intervalMs: live.heartbeatMs,
        suspectAfterMs: live.suspectAfterMs,
        downAfterMs: live.downAfterMs,
      },
      leaseMs: live.hostLeaseMs,
      leaseMarginMs: live.leaseMarginMs,
      // The agent's own timer that turns its VMs off when its lease ends: a few times a lease.
      pumpMs: Math.min(SMALL.timing.pumpMs, live.hostLeaseMs / 4),
    },
  };
}

/**
 * Plays a drill's plan in the simulator and writes its report. `tune` changes the farm's options
 * before it starts: tests plant a bug with it (say, failover that does not wait out the lease).
 */
export async function runSimPlan(
  plan: Plan,
  file: string,
  opts: SimDrillOptions = {},
  tune: (o: FarmOptions) => FarmOptions = (o) => o,
): Promise<DrillOutcome> {
  const why = unsupported(plan);
  if (why.length) throw new UsageError(`${file}: the simulator cannot play this drill: ${why.join('; ')}`);
  const seed = opts.seed ?? 1;
  const out = resolve(opts.out ?? join('.hyperfarm', 'drills', `${plan.name}-sim`));
  opts.onStep?.(
    `simulating a farm of ${plan.daemons} daemons and ${plan.hosts.length} hosts, seed ${seed}, in farm time`,
  );
  const farm = new FarmSimulation(tune(farmOptions(plan, seed)));
  let obs;
  const run = new SimDrillRun(plan, farm, opts.onStep);
  try {
    obs = await run.run();
  } finally {
    farm.drillHandle().end();
  }
  // The checks stamp some violations with the clock, some with farm time: farm time here.
  const violations = farm.violations.map((v) => ({
    ...v,
    time: v.time >= VirtualClock.EPOCH ? v.time - VirtualClock.EPOCH : v.time,
  }));
  const verdicts: Verdict[] = [
    ...judge(plan, obs),
    {
      kind: 'simInvariants',
      line: 0,
      expectation: "the simulator's invariants hold after every step",
      ok: violations.length === 0,
      measured: `${violations.length} violations`,
      reason: violations.length
        ? violations
            .slice(0, 5)
            .map((v) => `${v.property} at ${(v.time / 1000).toFixed(3)} s: ${v.detail}`)
            .join('; ')
        : `no VM on two hosts, no host overcommitted, no restart before the old lease ended${
            farm.o.network
              ? '; no NLB member active on two hosts, no bucket of a converged cluster owned by a dropped member'
              : ''
          }`,
    },
  ];
  // The run starts at the simulator's fixed instant: the same seed writes the same report.
  const report = {
    ...buildReport(plan, file, new Date(VirtualClock.EPOCH), obs, verdicts),
    simulation: { seed, violations, ...(farm.o.network ? { nlb: run.nlbReport() } : {}) },
  };
  return { report, ...writeReport(report, out) };
}

export const runSimDrillFile: RunSimDrill = (file, opts = {}) =>
  runSimPlan(loadDrill(readFileSync(file, 'utf8'), file, { quick: opts.quick }), file, opts);

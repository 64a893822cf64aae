/**
 * bench:placement — VMs created and placed through real daemons on a farm of real hosts.
 *
 * 3 daemons and 1,000 hosts (4 agent processes in multi-host mode, 250 hosts each, registered
 * by themselves), then 10,000 VMs created through the leader: CreateVms calls of 500 VMs, 4 in
 * flight (`--batch 1 --concurrency 256`: one CreateVm call per VM, 256 in flight). A placement counts
 * once the VM's host is committed: when the create's answer says it was placed in the entry that
 * created it, else when a lookup (GetVm, or a listing) finds it placed. Meanwhile a probe calls
 * GetVm and ListVms (one page of 100), linearizable, and records their latency. The agents
 * create the VMs on their hosts as they are placed, so that load is part of the run.
 *
 * Last line: {"placements_per_s", "hosts", "vms", "get_p99_ms", ...}.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { BenchFarm, cpuSeconds, percentile, round, say } from './farm-harness.js';
import { benchVmConfig } from './bench-hosts.js';

const opts = new Command('bench:placement')
  .option('--hosts <n>', 'hosts in the farm', Number, 1000)
  .option('--agents <n>', 'agent processes the hosts are shared among', Number, 4)
  .option('--vms <n>', 'VMs to create and place', Number, 10_000)
  .option('--batch <n>', 'VMs per CreateVms call (1: a CreateVm call per VM)', Number, 500)
  .option('--concurrency <n>', 'calls in flight', Number, 4)
  .option(
    '--paced-vms <n>',
    'VMs created after, at the paced rate, for the latency probe (0: none)',
    Number,
    10_000,
  )
  .option('--paced-rate <n>', 'creates a second in the paced phase', Number, 1000)
  .option('--probe-loops <n>', 'latency probe loops side by side', Number, 4)
  .option(
    '--profile <dir>',
    'write a CPU profile of every daemon and agent process into this folder, and the create phase as window.json',
  )
  .option('--semi-space <MiB>', "the daemons' V8 semi-space (0: V8's default)", Number, 64)
  .parse()
  .opts<{
    hosts: number;
    agents: number;
    vms: number;
    batch: number;
    concurrency: number;
    pacedVms: number;
    pacedRate: number;
    probeLoops: number;
    profile?: string;
    semiSpace: number;
  }>();

const farm = new BenchFarm('placement', opts.profile);
farm.semiSpaceMiB = opts.semiSpace;

try {
  await farm.startDaemons(3);
  const started = Date.now();
  farm.startRacks(opts.hosts, opts.agents);
  await farm.hostsUp(opts.hosts);
  say(
    `${opts.hosts} hosts registered and Up in ${((Date.now() - started) / 1000).toFixed(1)} s (${opts.agents} agent processes)`,
  );
  // Asked again: on a loaded machine the leadership can move while 1,000 hosts register, and the
  // first leader, a follower now, would forward every call (and be named the leader in the CPU
  // figures).
  const leader = await farm.leader();

  // Placements, as the leader commits them. A create's answer comes once its entry is applied
  // on the leader, and says whether the VM was placed in it (the operation at its placed step);
  // the VMs it left waiting are looked up until the controller has placed them. No Watch stream:
  // a reader as slow as this process under load would be cut by the daemon at this event rate.
  const placedAt = new Map<string, number>();
  const waiting = new Set<string>();
  const PLACED_PROGRESS = 30;
  const placedNow = (id: string) => {
    if (placedAt.has(id)) return;
    placedAt.set(id, Date.now());
    waiting.delete(id);
  };
  /** Looks up the VMs still waiting (a listing when many are, else one GetVm each). */
  const lookUpWaiting = async () => {
    const stale = { consistency: 'CONSISTENCY_STALE' as const };
    if (waiting.size > 100) {
      let pageToken = '';
      do {
        const page = await leader.listVms({ pageSize: 1000, pageToken, ...stale });
        for (const vm of page.vms) if (vm.status?.hostId && waiting.has(vm.id)) placedNow(vm.id);
        pageToken = page.nextPageToken;
      } while (pageToken);
    } else {
      for (const id of [...waiting]) if ((await leader.getVm({ id, ...stale })).status?.hostId) placedNow(id);
    }
  };

  // The latency probe: GetVm of a VM created so far, and one page of ListVms, from several
  // loops; `latency` is swapped for the paced phase's.
  const ids: string[] = [];
  let latency = { get: [] as number[], list: [] as number[] };
  let probing = true;
  const probeErrors: string[] = [];
  const probeLoop = async (loop: number) => {
    for (let i = loop; probing; i += opts.probeLoops) {
      if (ids.length === 0) {
        await new Promise((r) => setTimeout(r, 10));
        continue;
      }
      const into = latency;
      let t = performance.now();
      await leader.getVm({ id: ids[i % ids.length]! }).catch((err: Error) => probeErrors.push(err.message));
      into.get.push(performance.now() - t);
      if (i % 4 === 0) {
        t = performance.now();
        await leader.listVms({ pageSize: 100 }).catch((err: Error) => probeErrors.push(err.message));
        into.list.push(performance.now() - t);
      }
    }
  };
  const probe = Promise.all(Array.from({ length: opts.probeLoops }, (_, k) => probeLoop(k)));

  // CPU seconds of each process over the creates: the work per placement, whatever the load.
  // On 2 cores the rate is bounded by every process's CPU per placement together, the bench's
  // own included.
  const procs = farm.processes();
  // Each process's CPU a second with the farm Up and no creates (leases, event streams, sweeps):
  // work that goes with time, not with placements, so it weighs more per placement in a create
  // phase that load has slowed. Reported, and taken off, beside the raw figure.
  const IDLE_S = 3;
  const idle0 = procs.map((p) => cpuSeconds(p.pid));
  await new Promise((r) => setTimeout(r, IDLE_S * 1000));
  const idlePerS = procs.map((p, i) => (cpuSeconds(p.pid) - idle0[i]!) / IDLE_S);
  const cpu0 = procs.map((p) => cpuSeconds(p.pid));
  const t0 = Date.now();
  // The create phase on the monotonic clock the profiles' timestamps use (µs), for
  // scripts/bench/cpuprofile.ts --window.
  const fromUs = Number(process.hrtime.bigint() / 1000n);
  const { retried } = await farm.createVms({
    count: opts.vms,
    concurrency: opts.concurrency,
    batch: opts.batch,
    config: benchVmConfig,
    requestId: (i) => `bench-${i}`,
    created: (id, _ms, op) => {
      ids.push(id);
      if (op.progressPercent >= PLACED_PROGRESS && !op.error) placedNow(id);
      else waiting.add(id);
    },
  });
  const acknowledged = Date.now();
  const waitedFromAck = waiting.size;
  for (const deadline = Date.now() + 300_000; waiting.size > 0;) {
    if (Date.now() > deadline) throw new Error(`only ${placedAt.size} placed`);
    await lookUpWaiting();
    if (waiting.size > 0) await new Promise((r) => setTimeout(r, 100));
  }
  let last = 0;
  for (const at of placedAt.values()) last = Math.max(last, at);
  const phaseS = (Date.now() - t0) / 1000;
  if (opts.profile) {
    // Node makes the profiles' folder only as a profiled process exits, after this.
    mkdirSync(opts.profile, { recursive: true });
    writeFileSync(
      join(opts.profile, 'window.json'),
      JSON.stringify({ fromUs, toUs: Number(process.hrtime.bigint() / 1000n), vms: opts.vms, procs }),
    );
  }
  const cpuPer1000 = procs.map((p, i) => {
    const used = cpuSeconds(p.pid) - cpu0[i]!;
    return {
      name: p.name,
      s: round((used / opts.vms) * 1000),
      lessIdle: round(((used - idlePerS[i]! * phaseS) / opts.vms) * 1000),
      idlePerS: round(idlePerS[i]!),
    };
  });
  const fullRate = latency;

  // The paced phase: creates at a steady rate, answers not awaited before the next call.
  latency = { get: [], list: [] };
  let pacedRefused = 0;
  const pacedStart = performance.now();
  const pacedCalls: Promise<void>[] = [];
  const perCall = Math.max(1, Math.round(opts.pacedRate / 10));
  for (let first = opts.vms; first < opts.vms + opts.pacedVms; first += perCall) {
    const wait = pacedStart + ((first - opts.vms) / opts.pacedRate) * 1000 - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const n = Math.min(perCall, opts.vms + opts.pacedVms - first);
    const vms = Array.from({ length: n }, (_, k) => ({
      config: benchVmConfig(first + k),
      requestId: `bench-${first + k}`,
    }));
    pacedCalls.push(
      leader.createVms({ vms }, { timeoutMs: 60_000 }).then(
        ({ results }) => {
          for (const r of results)
            if (r.error) pacedRefused++;
            else ids.push(r.operation!.targetId);
        },
        () => void (pacedRefused += n),
      ),
    );
  }
  await Promise.all(pacedCalls);
  const pacedS = (performance.now() - pacedStart) / 1000;
  probing = false;
  await probe;
  const paced = latency;

  // A read that failed (a leader change under way) is reported, and its time counted.
  if (probeErrors.length > 0)
    say(`${probeErrors.length} GetVm/ListVms calls failed, first: ${probeErrors[0]}`);
  const seconds = (last - t0) / 1000;
  const placementsPerS = Math.round(opts.vms / seconds);
  // A leader change under load drops the connection: the run's figures are still printed.
  const used = new Set(
    (
      await leader.listVms({ pageSize: 1000, consistency: 'CONSISTENCY_STALE' }).catch(() => ({ vms: [] }))
    ).vms.map((v) => v.status!.hostId),
  );
  const how = opts.batch > 1 ? `CreateVms of ${opts.batch}` : 'CreateVm',
    inFlight = `${opts.concurrency} in flight`;
  say(
    `${opts.vms} VMs created (${how}, ${inFlight}), acknowledged in ${((acknowledged - t0) / 1000).toFixed(2)} s; all placed (committed) after ${seconds.toFixed(2)} s`,
  );
  if (retried > 0) say(`${retried} calls sent again after an error (a leader change)`);
  say(
    `${opts.vms - waitedFromAck} VMs placed by the entry that created them, ${waitedFromAck} later by the controller`,
  );
  say(`placements: ${placementsPerS}/s (Nomad's C1M published run: about 3,750/s on 5 servers)`);
  const lat = (l: number[]) =>
    `p50 ${round(percentile(l, 50))} ms, p99 ${round(percentile(l, 99))} ms (${l.length} calls)`;
  say(`GetVm under load: ${lat(fullRate.get)}`);
  say(`ListVms (100) under load: ${lat(fullRate.list)}`);
  if (opts.pacedVms > 0) {
    say(
      `paced phase: ${opts.pacedVms} more VMs asked at ${opts.pacedRate}/s, all answered after ${pacedS.toFixed(2)} s (${Math.round(opts.pacedVms / pacedS)}/s)${pacedRefused > 0 ? `, ${pacedRefused} refused` : ''}`,
    );
    say(`  GetVm: ${lat(paced.get)}`);
    say(`  ListVms (100): ${lat(paced.list)}`);
  }
  say(`binpack: the first 1000 VMs sit on ${used.size} hosts`);
  const sum = (k: 's' | 'lessIdle') => round(cpuPer1000.reduce((a, c) => a + c[k], 0));
  say(
    `CPU seconds per 1,000 placements: ${cpuPer1000.map((c) => `${c.name} ${c.s}`).join(', ')}; all together ${sum('s')} (less idle ${sum('lessIdle')})`,
  );
  say(
    `  less each one's idle CPU (s a second before the creates) over the ${phaseS.toFixed(1)} s phase: ${cpuPer1000.map((c) => `${c.name} ${c.lessIdle} (idle ${c.idlePerS})`).join(', ')}`,
  );
  say(
    `load average at the end: ${loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')}`,
  );
  say(
    `details: ${JSON.stringify({
      get_p50_ms: round(percentile(fullRate.get, 50)),
      get_calls: fullRate.get.length,
      list_p50_ms: round(percentile(fullRate.list, 50)),
      list_p99_ms: round(percentile(fullRate.list, 99)),
      paced: {
        vms: opts.pacedVms,
        rate: opts.pacedRate,
        answered_per_s: Math.round(opts.pacedVms / pacedS),
        get_p50_ms: round(percentile(paced.get, 50)),
        get_p99_ms: round(percentile(paced.get, 99)),
        get_calls: paced.get.length,
        list_p50_ms: round(percentile(paced.list, 50)),
        list_p99_ms: round(percentile(paced.list, 99)),
        list_calls: paced.list.length,
      },
      placed_s: round(seconds),
      batch: opts.batch,
      concurrency: opts.concurrency,
      semi_space_mib: opts.semiSpace,
      cpu_s_per_1000: Object.fromEntries(cpuPer1000.map((c) => [c.name, c.s])),
      cpu_s_per_1000_less_idle: Object.fromEntries(cpuPer1000.map((c) => [c.name, c.lessIdle])),
      cpu_s_per_1000_all: sum('s'),
    })}`,
  );
  // The last line carries exactly the keys issue 9 names.
  say(
    JSON.stringify({
      placements_per_s: placementsPerS,
      hosts: opts.hosts,
      vms: opts.vms,
      get_p99_ms: round(percentile(fullRate.get, 99)),
    }),
  );
} finally {
  await farm.stop();
}
process.exit(0);

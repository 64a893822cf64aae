/**
 * bench:placement — VMs created and placed through real daemons on a farm of real hosts.
 *
 * 3 daemons and 1,000 hosts (4 agent processes in multi-host mode, 250 hosts each, registered
 * by themselves), then 10,000 VMs created through the leader: CreateVms calls of 500 VMs, 4 in
 * flight (`--batch 1 --concurrency 256`: one CreateVm call per VM, 256 in flight). A placement counts
 * once the VM's host is committed (seen on the leader's Watch stream). Meanwhile a probe calls
 * GetVm and ListVms (one page of 100), linearizable, and records their latency. The agents
 * create the VMs on their hosts as they are placed, so that load is part of the run.
 *
 * Last line: {"placements_per_s", "hosts", "vms", "get_p99_ms", ...}.
 */
import { Command } from 'commander';
import type { pb } from '@hyperfarm/api';
import { BenchFarm, cluster, percentile, round, say, until } from './farm-harness.js';

const opts = new Command('bench:placement')
  .option('--hosts <n>', 'hosts in the farm', Number, 1000)
  .option('--agents <n>', 'agent processes the hosts are shared among', Number, 4)
  .option('--vms <n>', 'VMs to create and place', Number, 10_000)
  .option('--batch <n>', 'VMs per CreateVms call (1: a CreateVm call per VM)', Number, 500)
  .option('--concurrency <n>', 'calls in flight', Number, 4)
  .option('--profile <dir>', 'write a CPU profile of every daemon and agent process into this folder')
  .parse()
  .opts<{
    hosts: number;
    agents: number;
    vms: number;
    batch: number;
    concurrency: number;
    profile?: string;
  }>();

const farm = new BenchFarm('placement', opts.profile);

try {
  const leader = await farm.startDaemons(3);
  const started = Date.now();
  farm.startRacks(opts.hosts, opts.agents);
  await farm.hostsUp(opts.hosts);
  say(
    `${opts.hosts} hosts registered and Up in ${((Date.now() - started) / 1000).toFixed(1)} s (${opts.agents} agent processes)`,
  );

  // Placements, as the leader commits them.
  const from = await until('the revision', 30_000, async () => (await leader.getClusterStatus({})).revision);
  const placedAt = new Map<string, number>();
  let allPlaced!: () => void;
  const placed = new Promise<void>((r) => (allPlaced = r));
  const placedNow = (id: string) => {
    if (placedAt.has(id)) return;
    placedAt.set(id, Date.now());
    if (placedAt.size >= opts.vms) allPlaced();
  };
  // Events lost to a cut stream (the client fell behind the window): the VMs placed meanwhile
  // are read from a listing instead, counted when the listing sees them (a little late, never early).
  const recount = async () => {
    let pageToken = '';
    do {
      const page = await cluster(farm.leaderAddress).listVms({
        pageSize: 1000,
        pageToken,
        consistency: 'CONSISTENCY_STALE',
      });
      for (const vm of page.vms) if (vm.status?.hostId) placedNow(vm.id);
      pageToken = page.nextPageToken;
    } while (pageToken);
  };
  const watch = farm.watch(
    { fromRevision: Number(from), kinds: ['RESOURCE_KIND_VM'] },
    (e) => {
      if (e.vm?.status?.hostId) placedNow(e.id);
    },
    () => void recount().catch((err: Error) => say(`  the recount after a Watch gap failed: ${err.message}`)),
  );

  // The latency probe: GetVm of a VM created so far, and one page of ListVms.
  const ids: string[] = [];
  const latency = { get: [] as number[], list: [] as number[] };
  let probing = true;
  const probeErrors: string[] = [];
  const probe = (async () => {
    for (let i = 0; probing; i++) {
      if (ids.length === 0) {
        await new Promise((r) => setTimeout(r, 10));
        continue;
      }
      let t = performance.now();
      await leader.getVm({ id: ids[i % ids.length]! }).catch((err: Error) => probeErrors.push(err.message));
      latency.get.push(performance.now() - t);
      if (i % 4 === 0) {
        t = performance.now();
        await leader.listVms({ pageSize: 100 }).catch((err: Error) => probeErrors.push(err.message));
        latency.list.push(performance.now() - t);
      }
    }
  })();

  const t0 = Date.now();
  const { retried } = await farm.createVms({
    count: opts.vms,
    concurrency: opts.concurrency,
    batch: opts.batch,
    config: (i): pb.VmConfig => ({
      name: `vm-${i}`,
      processor: { count: 1 },
      memoryBytes: 512 * 1024 * 1024,
      guestOs: 'windows-server-2008-x64',
      integrationServices: true,
    }),
    requestId: (i) => `bench-${i}`,
    created: (id) => ids.push(id),
  });
  const acknowledged = Date.now();
  await Promise.race([
    placed,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`only ${placedAt.size} placed`)), 300_000)),
  ]);
  const last = Math.max(...placedAt.values());
  probing = false;
  await probe;
  watch.stop();

  // A read that failed (a leader change under way) is reported, and its time counted.
  if (probeErrors.length > 0)
    say(`${probeErrors.length} GetVm/ListVms calls failed, first: ${probeErrors[0]}`);
  const seconds = (last - t0) / 1000;
  const placementsPerS = Math.round(opts.vms / seconds);
  const used = new Set(
    (await leader.listVms({ pageSize: 1000, consistency: 'CONSISTENCY_STALE' })).vms.map(
      (v) => v.status!.hostId,
    ),
  );
  const how = opts.batch > 1 ? `CreateVms of ${opts.batch}` : 'CreateVm',
    inFlight = `${opts.concurrency} in flight`;
  say(
    `${opts.vms} VMs created (${how}, ${inFlight}), acknowledged in ${((acknowledged - t0) / 1000).toFixed(2)} s; all placed (committed) after ${seconds.toFixed(2)} s`,
  );
  if (retried > 0) say(`${retried} calls sent again after an error (a leader change)`);
  say(`placements: ${placementsPerS}/s (Nomad's C1M published run: about 3,750/s on 5 servers)`);
  say(
    `GetVm under load: p50 ${round(percentile(latency.get, 50))} ms, p99 ${round(percentile(latency.get, 99))} ms (${latency.get.length} calls)`,
  );
  say(
    `ListVms (100) under load: p50 ${round(percentile(latency.list, 50))} ms, p99 ${round(percentile(latency.list, 99))} ms (${latency.list.length} calls)`,
  );
  say(`binpack: the first 1000 VMs sit on ${used.size} hosts`);
  say(
    `details: ${JSON.stringify({
      get_p50_ms: round(percentile(latency.get, 50)),
      list_p50_ms: round(percentile(latency.list, 50)),
      list_p99_ms: round(percentile(latency.list, 99)),
      placed_s: round(seconds),
      batch: opts.batch,
      concurrency: opts.concurrency,
    })}`,
  );
  // The last line carries exactly the keys issue 9 names.
  say(
    JSON.stringify({
      placements_per_s: placementsPerS,
      hosts: opts.hosts,
      vms: opts.vms,
      get_p99_ms: round(percentile(latency.get, 99)),
    }),
  );
} finally {
  await farm.stop();
}
process.exit(0);

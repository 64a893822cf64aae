/**
 * An agent process's CPU per VM created, and per second idle, the way bench:placement loads it:
 * `--hosts` hosts in one multi-host process, each given `--per-host` VMs of the bench's shape
 * through AgentService.CreateVms calls of `--batch` (as the leader's agent calls carry a plan's
 * VMs for a host), then the process left idle with its VMs for `--idle-s`. process.cpuUsage of
 * this one process, which also runs the gRPC client: the same client work before and after a
 * change of the agent, so the difference is the agent's.
 *
 *   node --import tsx scripts/bench/agent-creates.ts [--hosts 20] [--per-host 60] [--batch 10]
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { createLogger } from '@hyperfarm/api';
import { agentConfigSchema } from '../../packages/agent/src/config.js';
import { startAgent } from '../../packages/agent/src/server.js';
import { agentClient } from '../../packages/agent/test/process-helpers.js';
import { benchVmConfig } from './bench-hosts.js';

const opts = new Command('bench:agent-creates')
  .option('--hosts <n>', 'hosts in the process', Number, 20)
  .option('--per-host <n>', 'VMs created on each host', Number, 60)
  .option('--batch <n>', 'VMs per CreateVms call', Number, 10)
  .option('--idle-s <n>', 'seconds idle after the creates', Number, 3)
  .option('--window <file>', 'write the create phase there (for cpuprofile.ts --window)')
  .parse()
  .opts<{ hosts: number; perHost: number; batch: number; idleS: number; window?: string }>();

const root = mkdtempSync(join(tmpdir(), 'hf-agent-creates-'));
const parsed = agentConfigSchema.parse({
  id: 'rack',
  idPrefix: 'rack',
  hosts: opts.hosts,
  grpcAddress: '127.0.0.1:0',
  metricsAddress: '127.0.0.1:0',
  dataDir: root,
  logLevel: 'silent',
});
const agent = await startAgent(
  { ...parsed, memoryBytes: parsed.memoryMib * 1024 * 1024 },
  createLogger({ program: 'bench', id: 'bench', level: 'silent' }),
);
try {
  const clients = agent.hosts.map((h) => agentClient(h.grpcAddress));
  const cpu = () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1e6;
  };
  const idle = async () => {
    const c0 = cpu();
    await new Promise((r) => setTimeout(r, opts.idleS * 1000));
    return (cpu() - c0) / opts.idleS;
  };
  const idleFrom = Number(process.hrtime.bigint() / 1000n);
  const idleEmpty = await idle();
  if (opts.window)
    writeFileSync(
      `${opts.window}.idle`,
      JSON.stringify({ fromUs: idleFrom, toUs: Number(process.hrtime.bigint() / 1000n) }),
    );
  const c0 = cpu();
  const fromUs = Number(process.hrtime.bigint() / 1000n);
  let n = 0;
  // A round adds one batch to every host, side by side, as a plan spreads over hosts.
  for (let round = 0; round * opts.batch < opts.perHost; round++) {
    await Promise.all(
      clients.map(async (c, h) => {
        const creates = Array.from(
          { length: Math.min(opts.batch, opts.perHost - round * opts.batch) },
          () => {
            const i = n++;
            return { vmId: `vm-${h}-${i}`, config: benchVmConfig(i), generation: 1 };
          },
        );
        const { results } = await c.p.createVms({ creates });
        for (const r of results) if (r.error) throw new Error(r.error.message);
      }),
    );
  }
  const createUs = ((cpu() - c0) / n) * 1e6;
  if (opts.window)
    writeFileSync(opts.window, JSON.stringify({ fromUs, toUs: Number(process.hrtime.bigint() / 1000n) }));
  const idleFull = await idle();
  for (const c of clients) c.raw.close();
  console.log(
    JSON.stringify({
      hosts: opts.hosts,
      vms: n,
      create_cpu_us_per_vm: Math.round(createUs),
      idle_cpu_s_per_s_empty: Math.round(idleEmpty * 1000) / 1000,
      idle_cpu_s_per_s_full: Math.round(idleFull * 1000) / 1000,
      load: loadavg().map((l) => Math.round(l * 10) / 10),
    }),
  );
} finally {
  await agent.stop();
  rmSync(root, { recursive: true, force: true });
}
process.exit(0);

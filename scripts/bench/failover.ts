/**
 * bench:failover (issue 10): kill -9 of an agent host running 200 HA VMs (2012 limits profile,
 * VMs that take 1 s to boot), timed until every one of them is Running on another host, at the
 * default liveness timings (Failover Clustering 2008's: Down after 5 s) and with the fast profile
 * (Down after 1 s). Real processes on loopback: one daemon, two agents on one cluster storage.
 * The last line is one JSON object. Goal: recovery <= down time + 2 s.
 */
import { ProcessFarm, until, vmSpec } from '../../packages/daemon/test/process/harness.js';

const VMS = Number(process.env['FAILOVER_VMS'] ?? 200);
const AGENT = ['--limits-profile', '2012', '--memory-mib', String(64 * 1024), '--logical-processors', '64'];

async function run(profile: 'default' | 'fast'): Promise<{ recoveryMs: number; downMs: number }> {
  const farm = await ProcessFarm.start({ daemons: 1, daemonArgs: ['--liveness-profile', profile] });
  try {
    const c = farm.client('daemon-1');
    await farm.startAgent('src', 1, AGENT);
    await farm.startAgent('dst', 1, AGENT);
    await until('2 hosts Up', 60_000, async () =>
      (await c.listHosts({ state: 'HOST_STATE_UP' })).hosts.length === 2 ? true : undefined,
    );
    const ops = [];
    for (let i = 0; i < VMS; i++) {
      const config = { ...vmSpec(`ha-${i}`, 64), workload: { bootMs: 1_000 } };
      ops.push(c.createVm({ config, hostId: 'src', start: true }));
    }
    for (const op of await Promise.all(ops)) await c.waitOperation({ id: op.id, timeoutMs: 120_000 });
    await until(`${VMS} VMs Running on src`, 300_000, async () => {
      const { vms } = await c.listVms({ hostId: 'src', state: 'VM_STATE_RUNNING', pageSize: 1000 });
      return vms.length === VMS ? true : undefined;
    });
    const killed = Date.now();
    await farm.killAgent('src');
    await until(`${VMS} VMs Running on dst`, 300_000, async () => {
      const { vms } = await c.listVms({ hostId: 'dst', state: 'VM_STATE_RUNNING', pageSize: 1000 });
      return vms.length === VMS ? true : undefined;
    });
    const recoveryMs = Date.now() - killed;
    const downMs = profile === 'fast' ? 1_000 : 5_000;
    console.log(
      `${profile}: ${VMS} VMs Running on another host ${recoveryMs} ms after kill -9 (down time ${downMs} ms)`,
    );
    return { recoveryMs, downMs };
  } finally {
    await farm.stop();
  }
}

const def = await run('default');
const fast = await run('fast');
console.log(
  JSON.stringify({
    recovery_ms: def.recoveryMs,
    down_ms: def.downMs,
    recovery_ms_fast: fast.recoveryMs,
    down_ms_fast: fast.downMs,
    vms: VMS,
  }),
);

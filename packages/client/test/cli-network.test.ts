import { expect } from 'chai';
import { hyperfarmProgram, runProgram } from '../src/index.js';
import { ProcessFarm } from '../src/farm/process-farm.js';
import { agreedLeader, until } from './helpers.js';

// `hyperfarm switch|nlb|traffic` against a real farm (a daemon and two agent processes), as a
// user would run them, with the JSON output parsed. Expectations come from Windows NLB's rules:
// the unicast cluster MAC is 02-BF followed by the VIP's octets, a member's masked source MAC is
// 02 followed by its priority and the VIP's octets, 60 buckets shared equally, drainstop takes
// no new connections.

interface Run {
  code: number;
  out: string;
  err: string;
}

describe('hyperfarm switch, nlb and traffic against a real farm (JSON output parsed)', function () {
  this.timeout(180_000);
  let farm: ProcessFarm;
  let hosts: string[];

  /** Runs the CLI in this process with the farm's endpoints, capturing what it prints. */
  async function cli(...argv: string[]): Promise<Run> {
    let out = '';
    let err = '';
    const io = {
      stdout: (t: string) => (out += t),
      stderr: (t: string) => (err += t),
      env: { HYPERFARM_ENDPOINTS: farm.endpoints.join(',') },
    };
    const code = await runProgram(hyperfarmProgram(io), argv, io);
    return { code, out, err };
  }
  /** Runs a command that must succeed, with `-o json`, and parses what it printed. */
  async function json<T>(...argv: string[]): Promise<T> {
    const r = await cli(...argv, '-o', 'json');
    expect(r.code, `hyperfarm ${argv.join(' ')}: ${r.err}`).to.equal(0);
    return JSON.parse(r.out) as T;
  }

  before(async () => {
    farm = await ProcessFarm.start({ daemons: 1 });
    await agreedLeader(farm);
    await farm.startAgent('a', 1);
    await farm.startAgent('b', 1);
    hosts = await until('2 hosts Up', 30_000, async () => {
      const list = await json<{ id: string; state: string }[]>('host', 'ls', '--state', 'up');
      return list.length === 2 ? list.map((h) => h.id).sort() : undefined;
    });
  });
  after(() => farm?.stop());

  it('makes a switch, connects two VMs, builds an NLB cluster, sends traffic, drainstops a member', async () => {
    const sw = await json<{ name: string; type: string; macAgingSeconds: number }>(
      'switch',
      'new',
      'ext',
      '--type',
      'external',
    );
    expect(sw).to.include({ name: 'ext', type: 'SWITCH_TYPE_EXTERNAL', macAgingSeconds: 300 });
    expect((await json<{ name: string }[]>('switch', 'ls')).map((w) => w.name)).to.deep.equal(['ext']);

    for (const i of [1, 2]) {
      await json('vm', 'new', `web-${i}`, '--memory', '128M', '--boot-ms', '100', '--host', hosts[i - 1]!);
      const v = await json<{ config: { networkAdapters: { switchName: string; ipv4Address: string }[] } }>(
        'switch',
        'connect',
        `web-${i}`,
        'ext',
        '--ip',
        `10.0.0.1${i}/24`,
        '--mac',
        `00-15-5D-AB-00-0${i}`,
      );
      expect(v.config.networkAdapters).to.have.length(1);
      expect(v.config.networkAdapters[0]).to.include({ switchName: 'ext', ipv4Address: `10.0.0.1${i}/24` });
      await json('vm', 'start', `web-${i}`);
    }

    const web = await json<{ clusterMac: string; portRules: { affinity: string; filteringMode: string }[] }>(
      'nlb',
      'new',
      'web',
      '--vip',
      '10.0.0.100',
      '--switch',
      'ext',
      '--rule',
      '80/tcp:multiple:none',
      '--heartbeat-ms',
      '100',
    );
    expect(web.clusterMac).to.equal('02-BF-0A-00-00-64');
    expect(web.portRules[0]).to.include({
      filteringMode: 'NLB_FILTERING_MODE_MULTIPLE_HOST',
      affinity: 'NLB_AFFINITY_NONE',
    });

    // Bad input: the CLI refuses a priority out of 1..32 itself (usage, exit 2); the farm
    // refuses a duplicate priority (exit 1, the status first).
    const outOfRange = await cli('nlb', 'add-member', 'web', 'web-1', '--priority', '33');
    expect(outOfRange.code).to.equal(2);
    expect(outOfRange.err).to.match(/^error: --priority: '33' is not a whole number from 1 to 32\n/);
    await json('nlb', 'add-member', 'web', 'web-1', '--priority', '1');
    const dup = await cli('nlb', 'add-member', 'web', 'web-2', '--priority', '1');
    expect(dup.code).to.equal(1);
    expect(dup.err.split('\n')[0]).to.match(/^error: [A-Z_]+: .*priority/);
    const added = await json<{ members: { hostPriority: number }[] }>(
      'nlb',
      'add-member',
      'web',
      'web-2',
      '--priority',
      '2',
    );
    expect(added.members.map((m) => m.hostPriority)).to.deep.equal([1, 2]);

    type NlbState = {
      converged: boolean;
      members: { hostPriority: number; state: string; hostId: string }[];
      bucketMaps: { startPort: number; owners: number[] }[];
    };
    const st = await until('two members converged', 60_000, async () => {
      const s = await json<NlbState>('nlb', 'state', 'web');
      return s.converged && s.members.length === 2 ? s : undefined;
    });
    // 60 buckets shared by equal weights: 30 each.
    expect(st.bucketMaps[0]!.startPort).to.equal(80);
    for (const p of [1, 2]) expect(st.bucketMaps[0]!.owners.filter((o) => o === p)).to.have.length(30);

    // The switch on the first host: web-1's port, its masked source MAC learned (02-<priority>-
    // <vip>), the cluster MAC never learned, and frames to it flooded.
    type SwitchShow = {
      hosts: {
        hostId: string;
        counters: { framesFlooded: number };
        ports: { kind: string; vmId: string }[];
        macTable: { macAddress: string }[];
      }[];
    };
    const shown = await until('web-1 heard on the first host', 30_000, async () => {
      const s = await json<SwitchShow>('switch', 'show', 'ext', '--host', hosts[0]!);
      return s.hosts[0]!.macTable.some((e) => e.macAddress === '02-01-0A-00-00-64') ? s : undefined;
    });
    const onA = shown.hosts[0]!;
    expect(onA.hostId).to.equal(hosts[0]);
    expect(onA.ports.filter((p) => p.kind === 'vm')).to.have.length(1);
    expect(onA.macTable.map((e) => e.macAddress)).not.to.include('02-BF-0A-00-00-64');
    expect((await json<SwitchShow>('switch', 'show', 'ext')).hosts.map((h) => h.hostId).sort()).to.deep.equal(
      hosts,
    );

    const started = await json<{ id: string; hostId: string }>(
      'traffic',
      'start',
      '--switch',
      'ext',
      '--vip',
      '10.0.0.100',
      '--rate',
      '50',
      '--duration',
      '2m',
      '--id',
      'run',
    );
    expect(started.id).to.equal('run');
    type Report = {
      phase: string;
      before: { members: { vmId: string; requests: number }[] };
      after: { requests: number; lost: number; reset: number; members: { vmId: string; requests: number }[] };
    };
    const vmIds = new Map(
      (await json<{ id: string; config: { name: string } }[]>('vm', 'ls')).map((v) => [v.config.name, v.id]),
    );
    await until('both members answering', 60_000, async () => {
      const r = await json<Report>('traffic', 'show', 'run');
      return r.before.members.filter((m) => m.vmId && m.requests > 0).length === 2 ? true : undefined;
    });
    expect(onA.counters.framesFlooded).to.be.greaterThan(0);

    // Drainstop web-2: the operation ends once it has stopped; new connections go to web-1 only.
    const drained = await json<{ done: boolean; error: unknown }>('nlb', 'drainstop', 'web', 'web-2');
    expect(drained.done).to.equal(true);
    expect(drained.error).to.equal(null);
    await until('web-2 stopped, web-1 alone converged', 60_000, async () => {
      const s = await json<NlbState>('nlb', 'state', 'web');
      const byPriority = new Map(s.members.map((m) => [m.hostPriority, m.state]));
      return byPriority.get(2) === 'stopped' && byPriority.get(1) === 'converged' ? true : undefined;
    });
    expect((await json<Report>('traffic', 'mark', 'run', 'after')).phase).to.equal('after');
    const after = await until('100 requests after the drainstop', 60_000, async () => {
      const r = await json<Report>('traffic', 'show', 'run');
      return r.after.requests >= 100 ? r : undefined;
    });
    expect(after.after.members.filter((m) => m.requests > 0).map((m) => m.vmId)).to.deep.equal([
      vmIds.get('web-1'),
    ]);
    expect(after.after.lost + after.after.reset).to.equal(0);

    // nlb start: web-2 joins again.
    const back = await json<{ hostPriority: number; state: string }>('nlb', 'start', 'web', 'web-2');
    expect(back.hostPriority).to.equal(2);
    expect(back.state).to.not.equal('stopped');
    await until('both converged again', 60_000, async () => {
      const s = await json<NlbState>('nlb', 'state', 'web');
      return s.converged && s.members.length === 2 ? true : undefined;
    });

    // A person's table: the state names the members' VMs.
    const table = await cli('nlb', 'state', 'web');
    expect(table.code, table.err).to.equal(0);
    expect(table.out).to.match(/^Converged:\s+yes$/m);
    expect(table.out).to.match(/^web-2\s+2\s/m);

    const stopped = await json<{ generating: boolean }>('traffic', 'stop', 'run', '--remove');
    expect(stopped.generating).to.equal(false);
    const gone = await cli('traffic', 'show', 'run');
    expect(gone.code).to.equal(1);
    expect(gone.err).to.match(/^error: NOT_FOUND: /);
  });

  it('removes members, the cluster, and refuses to remove a switch in use', async () => {
    const left = await json<{ members: unknown[] }>('nlb', 'rm-member', 'web', 'web-2');
    expect(left.members).to.have.length(1);
    expect(await json('nlb', 'rm', 'web')).to.deep.equal({ removed: 'web' });
    expect(await json('nlb', 'ls')).to.deep.equal([]);
    const inUse = await cli('switch', 'rm', 'ext');
    expect(inUse.code).to.equal(1);
    expect(inUse.err).to.match(/^error: FAILED_PRECONDITION: /);
    const bad = await cli('nlb', 'new', 'x', '--vip', '10.0.0.1', '--switch', 'ext', '--rule', '90-80');
    expect(bad.code).to.equal(2);
    expect(bad.err).to.match(/^error: --rule: '90-80' ends \(80\) before it starts \(90\)/);
  });
});

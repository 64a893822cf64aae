import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { HyperfarmClient } from '../src/index.js';
import { ProcessFarm } from '../src/farm/process-farm.js';
import { agreedLeader, until } from './helpers.js';

const BIN = fileURLToPath(new URL('../bin/hyperfarm.js', import.meta.url));

/** Runs the built `hyperfarm` program as a user would, with HYPERFARM_ENDPOINTS or flags. */
function hyperfarm(
  env: Record<string, string>,
  ...argv: string[]
): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...argv], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.once('exit', (code) => resolve({ code, out, err }));
  });
}

describe('the hyperfarm CLI end to end (real farm, JSON output parsed)', function () {
  this.timeout(90_000);
  let farm: ProcessFarm;
  let env: Record<string, string>;
  let agentAddress: string;

  before(async () => {
    farm = await ProcessFarm.start({ daemons: 3 });
    await agreedLeader(farm);
    agentAddress = (await farm.startAgent('rack', 2))[0]!.grpcAddress;
    env = { HYPERFARM_ENDPOINTS: farm.endpoints.join(',') };
    const c = new HyperfarmClient({ endpoints: farm.endpoints });
    await until('2 hosts Up', 30_000, async () => {
      const { hosts } = await c.call('listHosts', { state: 'HOST_STATE_UP' });
      return hosts.length === 2 ? true : undefined;
    });
    c.close();
  });
  after(() => farm?.stop());

  it('lists hosts, creates and starts a VM, and lists it, as JSON', async () => {
    const hosts = await hyperfarm(env, 'host', 'ls', '-o', 'json');
    expect(hosts.code, hosts.err).to.equal(0);
    expect((JSON.parse(hosts.out) as { state: string }[]).map((h) => h.state)).to.deep.equal([
      'HOST_STATE_UP',
      'HOST_STATE_UP',
    ]);

    const created = await hyperfarm(
      env,
      'vm',
      'new',
      'web-1',
      '--memory',
      '256M',
      '--boot-ms',
      '200',
      '--start',
      '-o',
      'json',
    );
    expect(created.code, created.err).to.equal(0);
    const op = JSON.parse(created.out) as {
      done: boolean;
      vm: { id: string; config: { name: string; memoryBytes: number } };
    };
    expect(op.done).to.equal(true);
    expect(op.vm.config).to.include({ name: 'web-1', memoryBytes: 256 * 1024 * 1024 });

    const vms = await hyperfarm({}, 'vm', 'ls', '-o', 'yaml', '--daemon', farm.endpoints[1]!);
    expect(vms.code, vms.err).to.equal(0);
    expect(vms.out).to.match(/name: web-1/);

    const table = await hyperfarm(env, 'vm', 'show', 'web-1');
    expect(table.out).to.match(/^Name:\s+web-1$/m);
  });

  it('waits for an operation longer than one call may take, and gives up at --wait-timeout', async () => {
    const boots = (name: string, ...flags: string[]) =>
      hyperfarm(env, 'vm', 'new', name, '--memory', '64M', '--boot-ms', '5000', '--start', ...flags);
    // The wait outlives --timeout: it bounds each call, not the boot.
    const waited = await boots('slow-1', '--timeout', '2500', '-o', 'json');
    expect(waited.code, waited.err).to.equal(0);
    expect((JSON.parse(waited.out) as { done: boolean }).done).to.equal(true);
    const gaveUp = await boots('slow-2', '--wait-timeout', '300');
    expect(gaveUp.code).to.equal(1);
    expect(gaveUp.err).to.match(/^error: DEADLINE_EXCEEDED: operation '[^']+' is not done after 300 ms/);
    const usage = await hyperfarm(env, 'vm', 'ls', '--wait-timeout', 'soon');
    expect(usage.code).to.equal(2);
    expect(usage.err).to.match(/--wait-timeout: 'soon' is not a number of ms/);
  });

  it('says an error in one line with its code (exit 1), UNIMPLEMENTED in words, and bad usage exits 2', async () => {
    const drain = await hyperfarm(env, 'host', 'drain', 'no-such-host');
    expect(drain.code).to.equal(1);
    expect(drain.err.split('\n')[0]).to.match(/^error: NOT_FOUND: .*no-such-host/);
    const refused = await hyperfarm(env, 'vm', 'pause', 'no-such-vm');
    expect(refused.code).to.equal(1);
    expect(refused.err).to.match(/^error: NOT_FOUND: VM 'no-such-vm' not found\n/);
    // An agent serves no ClusterService: the nearest thing to a farm without a feature.
    const missing = await hyperfarm({}, 'vm', 'ls', '--daemon', agentAddress);
    expect(missing.code).to.equal(1);
    expect(missing.err).to.match(/^error: UNIMPLEMENTED: .*\nerror: this farm does not offer that yet\n$/);
    const usage = await hyperfarm(env, 'vm', 'new', 'x', '--memory', 'lots');
    expect(usage.code).to.equal(2);
    const nowhere = await hyperfarm({ HYPERFARM_ENDPOINTS: 'nowhere' }, 'vm', 'ls');
    expect(nowhere.code).to.equal(2);
    expect(nowhere.err).to.match(/HYPERFARM_ENDPOINTS: 'nowhere' is not host:port/);
  });

  it('lists migrations as JSON', async () => {
    const m = await hyperfarm(env, 'migration', 'ls', '-o', 'json');
    expect(m.code, m.err).to.equal(0);
    expect(JSON.parse(m.out)).to.be.an('array');
  });

  it('lists the members as JSON, and refuses to remove one that is not a member', async () => {
    const ls = await hyperfarm({}, 'members', 'ls', '-o', 'json', '--daemon', farm.endpoints[0]!);
    expect(ls.code, ls.err).to.equal(0);
    expect(
      (JSON.parse(ls.out) as { members: { id: string }[] }).members.map((x) => x.id).sort(),
    ).to.deep.equal(['daemon-1', 'daemon-2', 'daemon-3']);
    const rm = await hyperfarm(env, 'members', 'rm', 'daemon-9');
    expect(rm.code).to.equal(1);
    expect(rm.err.split('\n')[0]).to.match(/^error: [A-Z_]+: .*daemon-9/);
  });

  it('reports the cluster status and streams events as JSON lines', async () => {
    const s = await hyperfarm(env, 'cluster', 'status', '-o', 'json');
    expect(s.code, s.err).to.equal(0);
    expect((JSON.parse(s.out) as { members: unknown[] }).members).to.have.length(3);
    const w = await hyperfarm(env, 'watch', '--count', '3', '-o', 'json');
    expect(w.code, w.err).to.equal(0);
    const revisions = w.out
      .trim()
      .split('\n')
      .map((l) => Number((JSON.parse(l) as { revision: number }).revision));
    expect(revisions).to.have.length(3);
    expect(revisions).to.deep.equal([...revisions].sort((a, b) => a - b));
  });
});

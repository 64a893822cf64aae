import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { checkHealth, listServices, processAlive } from '@hyperfarm/api';
import type { FarmFile } from '@hyperfarm/api';

const root = fileURLToPath(new URL('../..', import.meta.url));
const launcher = ['--import', 'tsx', join(root, 'scripts/farm/main.ts')];

/** Polls `check` until it returns a value, failing after `ms`. */
async function until<T>(what: string, ms: number, check: () => T | undefined): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function exitOf(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

describe('the local farm launcher', function () {
  this.timeout(90_000);
  const data = mkdtempSync(join(tmpdir(), 'hf-farm-'));
  let proc: ChildProcess;
  let output = '';
  let farm: FarmFile;

  before(async () => {
    proc = spawn(process.execPath, [...launcher, '--daemons', '1', '--agents', '1', '--data', data], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    proc.stdout!.on('data', (b: Buffer) => (output += b.toString()));
    proc.stderr!.on('data', (b: Buffer) => (output += b.toString()));
    const file = join(data, 'farm.json');
    farm = await until('farm.json', 60_000, () => {
      if (proc.exitCode !== null) throw new Error(`launcher exited early:\n${output}`);
      return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as FarmFile) : undefined;
    });
  });

  after(() => {
    if (proc.exitCode === null) proc.kill('SIGKILL');
    for (const p of farm?.processes ?? []) if (processAlive(p.pid)) process.kill(p.pid, 'SIGKILL');
  });

  it('writes farm.json listing every process with its role, id, addresses and pid', () => {
    expect(farm.version).to.equal(1);
    expect(farm.dataDir).to.equal(data);
    expect(farm.launcherPid).to.equal(proc.pid);
    expect(farm.processes.map((p) => [p.role, p.id])).to.deep.equal([
      ['daemon', 'daemon-1'],
      ['agent', 'agent-1'],
    ]);
    for (const p of farm.processes) {
      expect(p.grpcAddress).to.match(/^127\.0\.0\.1:\d+$/);
      expect(p.metricsAddress).to.match(/^127\.0\.0\.1:\d+$/);
      expect(processAlive(p.pid), `${p.id} alive`).to.equal(true);
      expect(p.dataDir).to.equal(join(data, p.id));
    }
    expect(output).to.match(/hyperfarm is up in [\d.]+ s: 1 daemons, 1 agents/);
    // The web console's address, which the launcher learns from the daemon once it serves.
    expect(output).to.match(/Web console .*\n {2}daemon-1 +http:\/\/127\.0\.0\.1:[1-9]\d*\n/);
  });

  it('has every process answer health checks and reflection', async () => {
    const expected: Record<string, string[]> = {
      daemon: ['hyperfarm.v1.ClusterService', 'hyperfarm.v1.RaftService'],
      agent: ['hyperfarm.v1.AgentService', 'hyperfarm.v1.MigrationService'],
    };
    for (const p of farm.processes) {
      expect(await checkHealth(p.grpcAddress), p.id).to.equal('SERVING');
      expect(await listServices(p.grpcAddress)).to.include.members(expected[p.role]!);
      const metrics = await fetch(`http://${p.metricsAddress}/metrics`);
      expect(metrics.status).to.equal(200);
      expect(await metrics.text()).to.include('process_cpu_user_seconds_total');
    }
  });

  it('is described by `hyperfarm farm status` and `hyperfarm members`', async () => {
    const cli = (...args: string[]) =>
      spawnSync(process.execPath, [join(root, 'packages/client/dist/bin/hyperfarm.js'), ...args], {
        encoding: 'utf8',
      });
    type Report = { processes: { id: string; health: string; detail: string }[] };
    // A lone daemon elects itself within an election timeout of starting.
    const report = await until('daemon-1 to lead', 20_000, () => {
      const status = cli('farm', 'status', '--data', data, '-o', 'json');
      expect(status.status, status.stderr).to.equal(0);
      const r = JSON.parse(status.stdout) as Report;
      return r.processes[0]!.detail.startsWith('leader') ? r : undefined;
    });
    expect(report.processes.map((p) => [p.id, p.health])).to.deep.equal([
      ['daemon-1', 'SERVING'],
      ['agent-1', 'SERVING'],
    ]);
    expect(report.processes[0]!.detail).to.match(/^leader, term \d+$/);
    expect(report.processes[1]!.detail).to.match(/^8 LPs, 32\.0 GiB, 0 VMs, profile 2008$/);

    const members = cli('members', '--data', data);
    expect(members.status, members.stderr).to.equal(0);
    expect(members.stdout).to.match(/leader daemon-1/);
    const missing = cli('members', 'transfer', '--data', data, '--to', 'daemon-9');
    expect(missing.status).to.equal(1);
    expect(missing.stderr).to.equal("error: NOT_FOUND: member 'daemon-9' not found\n");
  });

  it('refuses a second launcher on the same folder with a clear message, touching nothing', () => {
    const second = spawnSync(process.execPath, [...launcher, '--data', data], {
      cwd: root,
      encoding: 'utf8',
    });
    expect(second.status).to.equal(1);
    expect(second.stdout).to.include(`a farm is already running`);
    expect(second.stdout).to.include(`launcher pid ${proc.pid}`);
    for (const p of farm.processes) expect(processAlive(p.pid)).to.equal(true);
  });

  it('stops every child and exits 0 on Ctrl-C (SIGINT)', async () => {
    const exited = exitOf(proc);
    proc.kill('SIGINT');
    expect(await exited).to.equal(0);
    for (const p of farm.processes)
      expect(processAlive(p.pid), `${p.id} (pid ${p.pid}) still running`).to.equal(false);
    expect(existsSync(join(data, 'farm.lock'))).to.equal(false);
    expect(existsSync(join(data, 'farm.json'))).to.equal(false);
  });
});

describe('the launcher after a launcher died', function () {
  this.timeout(90_000);

  it('stops the children a killed launcher left behind, then starts afresh on the same data', async () => {
    const data = mkdtempSync(join(tmpdir(), 'hf-farm-orphans-'));
    const file = join(data, 'farm.json');
    const startFarm = () => {
      const proc = spawn(process.execPath, [...launcher, '--daemons', '1', '--agents', '1', '--data', data], {
        cwd: root,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      proc.stdout!.on('data', (b: Buffer) => (out += b.toString()));
      return { proc, output: () => out };
    };
    const readyFarm = (launcherPid: number) =>
      until('farm.json of the new launcher', 60_000, () => {
        if (!existsSync(file)) return undefined;
        const f = JSON.parse(readFileSync(file, 'utf8')) as FarmFile;
        return f.launcherPid === launcherPid ? f : undefined;
      });

    const first = startFarm();
    const old = await readyFarm(first.proc.pid!);
    const killed = exitOf(first.proc);
    first.proc.kill('SIGKILL');
    await killed;
    for (const p of old.processes) expect(processAlive(p.pid), `${p.id} left running`).to.equal(true);

    const second = startFarm();
    try {
      const fresh = await readyFarm(second.proc.pid!);
      for (const p of old.processes) expect(processAlive(p.pid), `old ${p.id} stopped`).to.equal(false);
      expect(second.output()).to.include('left running by a launcher that died');
      for (const p of fresh.processes) expect(await checkHealth(p.grpcAddress)).to.equal('SERVING');
      const exited = exitOf(second.proc);
      second.proc.kill('SIGINT');
      expect(await exited).to.equal(0);
      for (const p of fresh.processes) expect(processAlive(p.pid)).to.equal(false);
    } finally {
      if (second.proc.exitCode === null) second.proc.kill('SIGKILL');
    }
  });
});

describe('npm start stopped by a kill of npm (not Ctrl-C)', function () {
  this.timeout(120_000);

  it('stops the farm cleanly when the shell that ran the bootstrap goes away', async () => {
    const data = mkdtempSync(join(tmpdir(), 'hf-farm-'));
    // A shell that stays the bootstrap's parent, as npm's `sh -c` does; killing it reaches
    // neither the bootstrap nor the launcher, as `kill <npm's pid>` does not.
    const shell = spawn(
      'sh',
      [
        '-c',
        `"${process.execPath}" scripts/bootstrap.mjs start --daemons 1 --agents 1 --data "${data}"; true`,
      ],
      { cwd: root, stdio: 'ignore' },
    );
    const file = join(data, 'farm.json');
    const farm = await until('farm.json', 90_000, () =>
      existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as FarmFile) : undefined,
    );
    shell.kill('SIGKILL');
    try {
      await until('the farm stopped', 30_000, () =>
        !existsSync(file) && farm.processes.every((p) => !processAlive(p.pid)) ? true : undefined,
      );
      expect(existsSync(join(data, 'farm.lock'))).to.equal(false);
    } finally {
      for (const p of farm.processes) if (processAlive(p.pid)) process.kill(p.pid, 'SIGKILL');
    }
  });
});

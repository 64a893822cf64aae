import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';

const root = fileURLToPath(new URL('../..', import.meta.url));
const bins = {
  daemon: join(root, 'packages/daemon/dist/bin/hyperfarm-daemon.js'),
  agent: join(root, 'packages/agent/dist/bin/hyperfarm-agent.js'),
};

function run(bin: string, args: string[], env: NodeJS.ProcessEnv = {}) {
  return spawnSync(process.execPath, [bin, ...args], {
    encoding: 'utf8',
    env: { PATH: process.env.PATH, ...env },
    timeout: 20_000,
  });
}

describe('the programs refuse bad configuration', () => {
  it('hyperfarm-daemon: a bad flag value exits 2 naming the flag and the reason', () => {
    const r = run(bins.daemon, ['--grpc-address', 'localhost']);
    expect(r.status).to.equal(2);
    expect(r.stderr).to.match(
      /hyperfarm-daemon: invalid configuration: grpcAddress from flag --grpc-address: expected host:port/,
    );
  });

  it('hyperfarm-daemon: peers that leave out this daemon are refused', () => {
    const r = run(bins.daemon, ['--id', 'daemon-9', '--peers', 'daemon-1=127.0.0.1:1']);
    expect(r.status).to.equal(2);
    expect(r.stderr).to.include(`this daemon's id 'daemon-9' is not among them`);
  });

  it('hyperfarm-agent: a bad environment value exits 2 naming the variable', () => {
    const r = run(bins.agent, [], { HYPERFARM_AGENT_MEMORY_MIB: '-5' });
    expect(r.status).to.equal(2);
    expect(r.stderr).to.match(/memoryMib from environment HYPERFARM_AGENT_MEMORY_MIB: .*>=512/);
  });

  it('hyperfarm-agent: an unknown flag exits 2', () => {
    const r = run(bins.agent, ['--memroy-mib', '1']);
    expect(r.status).to.equal(2);
    expect(r.stderr).to.include(`unknown option '--memroy-mib'`);
  });

  it('--help prints every option with its environment variable and exits 0', () => {
    const r = run(bins.daemon, ['--help']);
    expect(r.status).to.equal(0);
    expect(r.stdout).to.include('--data-dir <value>');
    expect(r.stdout).to.include('HYPERFARM_DAEMON_DATA_DIR');
  });
});

import { spawn } from 'node:child_process';
import { expect } from 'chai';
import { cpuSeconds } from '../bench/farm-harness.js';

// bench:scale reports each daemon's CPU per phase from cpuSeconds: on a machine shared with other
// sessions the wall-clock figures follow the load, and the CPU time is what compares.
describe("a bench's CPU time of another process", function () {
  this.timeout(20_000);
  it('counts what the process spent on a core, not the time it waited', async () => {
    // 600 ms on a core (by its own count: the machine is shared), then 600 ms asleep.
    const child = spawn(process.execPath, [
      '-e',
      'while (process.cpuUsage().user < 600_000); setTimeout(() => {}, 600); process.stdout.write("x")',
    ]);
    const spun = new Promise((r) => child.stdout.once('data', r));
    const exited = new Promise((r) => child.once('exit', r));
    await spun;
    const before = cpuSeconds(child.pid);
    await new Promise((r) => setTimeout(r, 400));
    const asleep = cpuSeconds(child.pid) - before;
    // At least the spin, and the 400 ms asleep add almost nothing.
    expect(before).to.be.at.least(0.59);
    expect(asleep).to.be.below(0.1);
    await exited;
    expect(cpuSeconds(child.pid)).to.equal(0);
  });
});

import { expect } from 'chai';
import type { pb } from '@hyperfarm/api';
import { mib } from './helpers.js';
import { useAgentProcesses, waitForState, type AgentProcess } from './process-helpers.js';

type StopAction = pb.AutomaticStopAction;

const config = (name: string, automaticStopAction: StopAction, over: Partial<pb.VmConfig> = {}) => ({
  name,
  processor: { count: 1 },
  memoryBytes: mib(64),
  guestOs: 'windows-server-2008-x64',
  integrationServices: true,
  automaticStopAction,
  workload: { bootMs: 50, workingSetBytes: mib(8), dirtyPagesPerSecond: 1_000, cpuDemandPercent: 10 },
  ...over,
});

/** A guest without integration services: nothing to ask for a shutdown. */
const noIntegrationServices: Partial<pb.VmConfig> = {
  guestOs: 'other-x86',
  integrationServices: false,
};

async function createRunning(a: AgentProcess, vms: Record<string, pb.VmConfig>): Promise<void> {
  for (const [vmId, c] of Object.entries(vms)) {
    await a.client.p.createVm({ vmId, config: c, generation: 1 });
    await a.client.p.changeVmState({ vmId, action: 'VM_ACTION_START', generation: 1 });
  }
  for (const vmId of Object.keys(vms)) await waitForState(a.client, vmId, 'VM_STATE_RUNNING');
}

async function sigterm(a: AgentProcess): Promise<void> {
  a.child.kill('SIGTERM');
  expect(await a.exited).to.equal(0);
  a.client.raw.close();
}

async function statesAfterRestart(start: (id: string, args?: string[]) => Promise<AgentProcess>) {
  const b = await start('agent-1');
  const vms = (await b.client.p.listVms({})).vms;
  return Object.fromEntries(vms.map((v) => [v.id, { state: v.status!.state, message: v.status!.message }]));
}

describe('automatic stop actions at a clean agent shutdown (SIGTERM)', function () {
  this.timeout(60_000);
  const { start } = useAgentProcesses('stop');

  it('Save saves, Shut down shuts the guest down (or turns off a guest without integration services), Turn off turns off', async () => {
    const a = await start('agent-1');
    await createRunning(a, {
      sav: config('sav', 'AUTOMATIC_STOP_ACTION_SAVE'),
      shut: config('shut', 'AUTOMATIC_STOP_ACTION_SHUT_DOWN'),
      bare: config('bare', 'AUTOMATIC_STOP_ACTION_SHUT_DOWN', noIntegrationServices),
      off: config('off', 'AUTOMATIC_STOP_ACTION_TURN_OFF'),
    });
    await sigterm(a);

    const after = await statesAfterRestart(start);
    expect(after['sav']!.state).to.equal('VM_STATE_SAVED');
    expect(after['shut']).to.deep.equal({ state: 'VM_STATE_OFF', message: 'shut down by the guest' });
    expect(after['bare']).to.deep.equal({
      state: 'VM_STATE_OFF',
      message: 'turned off: the guest has no shutdown integration service',
    });
    expect(after['off']).to.deep.equal({ state: 'VM_STATE_OFF', message: 'turned off' });
  });

  it('a guest that does not shut down within shutdownTimeoutMs is turned off, saying so', async () => {
    // The model's guest takes 2 s to shut down: longer than this agent waits.
    const a = await start('agent-1', ['--shutdown-timeout-ms', '200']);
    await createRunning(a, { shut: config('shut', 'AUTOMATIC_STOP_ACTION_SHUT_DOWN') });
    await sigterm(a);

    const after = await statesAfterRestart(start);
    expect(after['shut']).to.deep.equal({
      state: 'VM_STATE_OFF',
      message: 'turned off: the guest did not shut down within 200 ms of the agent stopping',
    });
  });
});

import type { pb } from '@hyperfarm/api';
import type { AgentPort, HostRef } from '../../src/edge/agent-port.js';
import type { VmActionName } from '../../src/fsm/index.js';

export type Call = {
  kind: 'create' | 'state';
  host: string;
  vmId: string;
  generation: number;
  action?: string;
};

/**
 * Agents that answer at once, as a host does: a create leaves the VM Off, a start makes it
 * Starting. With `startOnCreate`, a create asked to start the VM starts it (a current agent);
 * without, the request's `start` goes unread (an agent older than AgentCreateVmRequest.start).
 */
export function agents(calls: Call[], refuseStarts = 0, startOnCreate = false): AgentPort {
  let revision = 0;
  const vm = (id: string, generation: number, state: pb.VmState): pb.Vm__Output =>
    ({
      id,
      revision: ++revision,
      status: { state, generation, heartbeat: 'HEARTBEAT_STATUS_NO_CONTACT', message: '' },
    }) as unknown as pb.Vm__Output;
  const unused = () => Promise.reject(new Error('not used by this test'));
  return {
    describe: unused,
    grantLease: (host: HostRef) =>
      host.id === 'h1' ? unused() : Promise.resolve({} as pb.GrantLeaseResponse__Output),
    listVms: () => Promise.resolve([]),
    watchEvents: () => ({ cancel: () => undefined }),
    createVm: (host: HostRef, vmId: string, _config: unknown, generation: number, start = false) => {
      calls.push({ kind: 'create', host: host.id, vmId, generation, ...(start ? { action: 'start' } : {}) });
      return Promise.resolve(
        vm(vmId, generation, start && startOnCreate ? 'VM_STATE_STARTING' : 'VM_STATE_OFF'),
      );
    },
    changeVmState: (host: HostRef, vmId: string, action: VmActionName, generation: number) => {
      calls.push({ kind: 'state', host: host.id, vmId, generation, action });
      if (refuseStarts-- > 0) return Promise.reject(Object.assign(new Error('unavailable'), { code: 14 }));
      return Promise.resolve(vm(vmId, generation, 'VM_STATE_STARTING'));
    },
    updateVm: unused,
    deleteVm: unused,
    dropStaleVm: unused,
    getVm: unused,
    createCheckpoint: unused,
    applyCheckpoint: unused,
    deleteCheckpoint: unused,
    renameCheckpoint: unused,
    listCheckpoints: unused,
    migrateIn: () => ({ done: unused(), cancel: () => undefined }),
    commitMigration: unused,
    abortMigration: unused,
    getMigrationStatus: unused,
    close: () => undefined,
  } as unknown as AgentPort;
}

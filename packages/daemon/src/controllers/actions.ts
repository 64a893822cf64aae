import type { VmActionName, VmConfig } from '../fsm/index.js';

/**
 * What the controllers ask of agents: each action names its host, its VM and the VM's
 * generation (the fencing token), and the operation it serves ('' when it only brings the VM
 * back to what is wanted). Carried out through an AgentPort, over gRPC or in the simulator.
 */
export type AgentAction =
  // `start`: the host starts the VM once created (a VM that should run), as the reconciler's next
  // step would; a host that does not leaves it to that step.
  | (Target & { kind: 'create'; config: VmConfig; start: boolean })
  | (Target & { kind: 'change-state'; action: VmActionName })
  | (Target & { kind: 'update'; config: VmConfig; paths: string[] })
  | (Target & { kind: 'delete' })
  | (Target & { kind: 'checkpoint.create'; checkpointId: string; name: string })
  | (Target & {
      kind: 'checkpoint.apply';
      checkpointId: string;
      turnOffFirst: boolean;
      saveCurrentFirst: boolean;
    })
  | (Target & { kind: 'checkpoint.delete'; checkpointId: string; subtree: boolean })
  | (Target & { kind: 'checkpoint.rename'; checkpointId: string; name: string });

export interface Target {
  hostId: string;
  vmId: string;
  generation: number;
  /** The operation the action serves; '' for a correction of drift. */
  opId: string;
}

import { existsSync } from 'node:fs';
import type { pb } from '@hyperfarm/api';
import { normalizeConfig } from '../engine/validate.js';
import type { AgentHost } from './agent-host.js';
import type { Checkpoints } from './checkpoints.js';

/**
 * CreateVm with cluster storage: a VM whose folder there holds a manifest of an older generation
 * is adopted as it was left (a failover, or a stopped VM moved here): its configuration with its
 * current disk files, its snapshots and its saved state. Otherwise the VM is created, and this
 * host claims its folder (refused if a newer generation owns it). Without cluster storage, a
 * plain create.
 */
export async function adoptOrCreate(
  host: AgentHost,
  checkpoints: Checkpoints,
  vmId: string,
  config: pb.VmConfig__Output,
  generation: number,
): Promise<pb.Vm__Output> {
  const cluster = host.cluster;
  if (!cluster || host.engine.vms.has(vmId)) return host.createVm(vmId, config, generation);
  const manifest = await cluster.manifest(vmId);
  if (!manifest || manifest.vmId !== vmId || manifest.generation >= generation) {
    await cluster.claim(vmId, generation, 'create');
    return host.createVm(vmId, config, generation);
  }
  await cluster.claim(vmId, generation, 'take over');
  const saved = manifest.saved !== null && existsSync(host.savedStatePath(vmId));
  await checkpoints.adopt(vmId, manifest.checkpoints, manifest.currentId);
  const vm = await host.mutate((e) =>
    e.adopt(
      {
        id: vmId,
        config: normalizeConfig(manifest.config),
        generation,
        state: saved ? 'VM_STATE_SAVED' : 'VM_STATE_OFF',
        desiredState: saved ? 'VM_STATE_SAVED' : 'VM_STATE_OFF',
        createdAtMs: manifest.createdAtMs,
        message: '',
        savedHash: manifest.saved?.sha256 ?? '',
        savedPages: manifest.saved?.pages ?? 0,
      },
      saved,
      `adopted from cluster storage (left by host '${manifest.hostId}' at generation ${manifest.generation})`,
    ),
  );
  host.logger.info({ vmId, from: manifest.hostId, generation, saved }, 'adopted a VM from cluster storage');
  return vm;
}

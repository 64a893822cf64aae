import type { PromiseClient, pb } from '@hyperfarm/api';

type Cluster = PromiseClient<pb.ClusterServiceClient>;

/** ClusterService's unary methods, in the client's camelCase spelling. */
export type Method = {
  [K in keyof Cluster]: K extends `${infer F}${string}` ? (F extends Lowercase<F> ? K : never) : never;
}[keyof Cluster];

export type RequestOf<M extends Method> = Parameters<Cluster[M]>[0];
export type ResponseOf<M extends Method> = Awaited<ReturnType<Cluster[M]>>;

/**
 * What a retry of each method may do, which decides when the client retries it:
 * - `read`: nothing; retried on any transient failure.
 * - `keyed`: a write that carries a request id the farm deduplicates (the client fills one in);
 *   retried on any transient failure with the same id, so it happens at most once.
 * - `idempotent`: a write that sets absolute values; doing it twice ends in the same state.
 * - `write`: retried only when the failure proves it did not happen (see `provenNotApplied`).
 * A Record over every method, so a new RPC cannot be added without deciding.
 */
export type Safety = 'read' | 'keyed' | 'idempotent' | 'write';

export const SAFETY: Record<Method, Safety> = {
  listMembers: 'read',
  addMember: 'write',
  promoteMember: 'write',
  removeMember: 'write',
  transferLeadership: 'write',
  registerHost: 'write',
  getHost: 'read',
  listHosts: 'read',
  updateHost: 'idempotent',
  removeHost: 'write',
  drainHost: 'write',
  undrainHost: 'idempotent',
  whatIfHostFailure: 'read',
  getFarmSettings: 'read',
  updateFarmSettings: 'idempotent',
  createVm: 'keyed',
  // Each VM carries its own request id (if the caller gives them): no one key for the call.
  createVms: 'write',
  getVm: 'read',
  listVms: 'read',
  updateVm: 'idempotent',
  deleteVm: 'write',
  changeVmState: 'write',
  explainPlacement: 'read',
  createCheckpoint: 'write',
  listCheckpoints: 'read',
  renameCheckpoint: 'idempotent',
  applyCheckpoint: 'write',
  deleteCheckpoint: 'write',
  migrateVm: 'write',
  getMigration: 'read',
  listMigrations: 'read',
  cancelMigration: 'idempotent',
  createSwitch: 'write',
  getSwitch: 'read',
  listSwitches: 'read',
  deleteSwitch: 'write',
  createNlbCluster: 'write',
  getNlbCluster: 'read',
  listNlbClusters: 'read',
  updateNlbCluster: 'idempotent',
  deleteNlbCluster: 'write',
  addNlbMember: 'write',
  removeNlbMember: 'write',
  drainstopNlbMember: 'write',
  getNlbClusterState: 'read',
  controlNlbMember: 'idempotent',
  getSwitchState: 'read',
  startTraffic: 'write',
  getTraffic: 'read',
  markTrafficPhase: 'idempotent',
  stopTraffic: 'idempotent',
  getOperation: 'read',
  listOperations: 'read',
  waitOperation: 'read',
  getClusterStatus: 'read',
};

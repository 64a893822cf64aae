import { notFound, unary, type pb } from '@hyperfarm/api';
import { planDrain } from '../controllers/index.js';
import { hostView } from '../fsm/index.js';
import { readState, type FarmContext } from './farm-context.js';
import { liveLookup } from './live-hosts.js';
import { migrationDeadline, type MigrationApiConfig } from './migrations-api.js';
import { requireHostId } from './requests.js';
import { newId, startedOperation } from './vms-api.js';

/** ClusterService: DrainHost and UndrainHost. */
export function drainHandlers(ctx: FarmContext, cfg: MigrationApiConfig): Partial<pb.ClusterServiceHandlers> {
  return {
    DrainHost: unary<pb.DrainHostRequest__Output, pb.Operation>(async (req) => {
      const id = requireHostId('id', req.id);
      const s = await readState(ctx, 'CONSISTENCY_LINEARIZABLE');
      if (!s.hosts.has(id)) throw notFound('host', id);
      const plan = planDrain(s, id, ctx.scheduler);
      // One deadline for the drain's migrations: the largest VM's.
      const deadlineMs = Math.max(0, ...plan.moves.map((m) => migrationDeadline(cfg, s.vms.get(m.vmId)!)));
      const result = await ctx.proposer.submit({
        type: 'host.drain',
        hostId: id,
        opId: newId('op'),
        moves: plan.moves.map((m) => ({ ...m, migrationId: newId('mig'), opId: newId('op') })),
        stranded: plan.stranded,
        deadlineMs,
      });
      return startedOperation(ctx.machine.state, result);
    }),

    UndrainHost: unary<pb.UndrainHostRequest__Output, pb.Host>(async (req) => {
      const id = requireHostId('id', req.id);
      await ctx.proposer.submit({ type: 'host.undrain', hostId: id });
      const live = await liveLookup(ctx);
      const s = ctx.machine.state;
      const host = s.hosts.get(id);
      if (!host) throw notFound('host', id);
      return hostView(s, host, live(id));
    }),
  };
}

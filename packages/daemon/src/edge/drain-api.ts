import { notFound, unary, type pb } from '@hyperfarm/api';
import { planDrain } from '../controllers/index.js';
import { drainOf, hostView } from '../fsm/index.js';
import { readState, waitOperation, type FarmContext } from './farm-context.js';
import { liveLookup } from './live-hosts.js';
import { migrationDeadline, type MigrationApiConfig } from './migrations-api.js';
import { requireHostId } from './requests.js';
import { newId, startedOperation } from './vms-api.js';

/** How long a drain waits for its host's VMs' operations under way before it plans. */
const BUSY_WAIT_MS = 30_000;

/** ClusterService: DrainHost and UndrainHost. */
export function drainHandlers(ctx: FarmContext, cfg: MigrationApiConfig): Partial<pb.ClusterServiceHandlers> {
  return {
    DrainHost: unary<pb.DrainHostRequest__Output, pb.Operation>(async (req) => {
      const id = requireHostId('id', req.id);
      let s = await readState(ctx, 'CONSISTENCY_LINEARIZABLE');
      const host = s.hosts.get(id);
      if (!host) throw notFound('host', id);
      // Maintenance first, in an entry of its own: placement then leaves the host alone, so the
      // plan made on the read after it holds every VM the host will have. Planned on a read from
      // before, a create placed there in between was stranded and failed the drain (found by
      // `drill run --sim` on drills/host-drain.yaml). A drain refused after this (the host went
      // Down meanwhile) leaves the host in maintenance, as a drain that ran does: UndrainHost.
      if (!host.maintenance && host.state === 'HOST_STATE_UP' && !drainOf(s, id)) {
        await ctx.proposer.submit({
          type: 'host.update',
          id,
          paths: ['maintenance'],
          name: '',
          labels: {},
          maintenance: true,
        });
        s = await readState(ctx, 'CONSISTENCY_LINEARIZABLE');
      }
      // A VM whose operation is under way (a create still finishing, a start) cannot move yet;
      // planned now it would be stranded and fail the drain. Its operation ends in moments and
      // no new one can be placed here, so the drain waits for them (bounded) and then plans:
      // Windows pauses the node first and then moves every role it holds.
      const busy = [...(s.vmsByHost.get(id) ?? [])]
        .map((vmId) => s.vms.get(vmId)?.busyOpId)
        .filter((opId): opId is string => !!opId);
      if (busy.length > 0) {
        await Promise.all(
          busy.map((opId) => waitOperation(ctx.machine, opId, BUSY_WAIT_MS, undefined, ctx.timers)),
        );
        s = await readState(ctx, 'CONSISTENCY_LINEARIZABLE');
      }
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

import { invalidArgument, notFound, quote, unary, unavailable, type pb } from '@hyperfarm/api';
import { hostView, type FarmState } from '../fsm/index.js';
import { readState, type FarmContext } from './farm-context.js';
import { liveLookup, type LiveLookup } from './live-hosts.js';
import {
  page,
  requireAddress,
  requireEnum,
  requireHostId,
  requireHostName,
  requireLabels,
} from './requests.js';

const HOST_STATES = ['HOST_STATE_UP', 'HOST_STATE_SUSPECT', 'HOST_STATE_DOWN'] as const;
const HOST_FIELDS = ['name', 'labels', 'maintenance'] as const;

/** ClusterService: hosts. */
export function hostHandlers(ctx: FarmContext): Partial<pb.ClusterServiceHandlers> {
  const view = (s: FarmState, id: string, live: LiveLookup): pb.Host => {
    const host = s.hosts.get(id);
    if (!host) throw notFound('host', id);
    return hostView(s, host, live(id));
  };

  return {
    RegisterHost: unary<pb.RegisterHostRequest__Output, pb.Host>(async (req) => {
      const address = requireAddress('address', req.address);
      const name = req.name === '' ? '' : requireHostName('name', req.name);
      const labels = requireLabels('labels', req.labels);
      let d;
      try {
        d = await ctx.port.describe(address);
      } catch (err) {
        throw unavailable(
          `cannot reach an agent at ${quote(address)}: ${(err as { details?: string }).details ?? String(err)}`,
        );
      }
      // The agent's answer crossed a process boundary too: its id names the host for good.
      const id = requireHostId('address (the agent there reported its id)', d.host.id);
      const capacity = d.host.capacity;
      if (!capacity || !d.host.limits)
        throw unavailable(`the agent at ${quote(address)} did not describe its capacity`);
      await ctx.proposer.submit({
        type: 'host.register',
        host: {
          id,
          name,
          address,
          labels,
          capacity,
          limits: d.host.limits,
          guestOs: d.guests,
          clusterStorage: d.host.clusterStorage,
        },
      });
      const live = await liveLookup(ctx);
      return view(ctx.machine.state, id, live);
    }),

    GetHost: unary<pb.GetHostRequest__Output, pb.Host>(async (req) => {
      const id = requireHostId('id', req.id);
      const s = await readState(ctx, req.consistency);
      const live = await liveLookup(ctx);
      return view(s, id, live);
    }),

    ListHosts: unary<pb.ListHostsRequest__Output, pb.ListHostsResponse>(async (req) => {
      const state =
        req.state === 'HOST_STATE_UNSPECIFIED' ? undefined : requireEnum('state', req.state, HOST_STATES);
      const s = await readState(ctx, req.consistency);
      const hosts = [...s.hosts.values()].filter((h) => !state || h.state === state);
      const p = page('hosts', hosts, (h) => h.id, req);
      const live = await liveLookup(ctx);
      return { hosts: p.items.map((h) => view(s, h.id, live)), nextPageToken: p.nextPageToken };
    }),

    UpdateHost: unary<pb.UpdateHostRequest__Output, pb.Host>(async (req) => {
      if (!req.host) throw invalidArgument('host', 'is required');
      const id = requireHostId('host.id', req.host.id);
      const paths = req.updateMask?.paths ?? [];
      if (paths.length === 0)
        throw invalidArgument('update_mask', `name the fields to change: ${HOST_FIELDS.join(', ')}`);
      for (const p of paths) {
        if (!(HOST_FIELDS as readonly string[]).includes(p))
          throw invalidArgument(
            'update_mask',
            `${quote(p)} cannot be changed; only ${HOST_FIELDS.join(', ')}`,
          );
      }
      const fields = paths as (typeof HOST_FIELDS)[number][];
      await ctx.proposer.submit({
        type: 'host.update',
        id,
        paths: fields,
        name: fields.includes('name') ? requireHostName('host.name', req.host.name) : '',
        labels: fields.includes('labels') ? requireLabels('host.labels', req.host.labels) : {},
        maintenance: req.host.maintenance,
      });
      const live = await liveLookup(ctx);
      return view(ctx.machine.state, id, live);
    }),

    RemoveHost: unary<pb.RemoveHostRequest__Output, pb.RemoveHostResponse>(async (req) => {
      await ctx.proposer.submit({ type: 'host.remove', id: requireHostId('id', req.id) });
      return {};
    }),
  };
}

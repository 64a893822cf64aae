import { failedPrecondition, invalidArgument, notFound, unary, type pb } from '@hyperfarm/api';
import { admissionRefusal, whatIfHostFailure, type AdmissionAsk } from '../controllers/index.js';
import { HA_SETTING_NAMES, priorityOf, type FarmState, type HaSettings } from '../fsm/index.js';
import { readState, type FarmContext } from './farm-context.js';
import { requireHostId } from './requests.js';

/** ClusterService: the farm's HA settings and WhatIfHostFailure. */
export function haHandlers(ctx: FarmContext): Partial<pb.ClusterServiceHandlers> {
  return {
    GetFarmSettings: unary<pb.GetFarmSettingsRequest__Output, pb.FarmSettings>(async () =>
      settingsView((await readState(ctx, 'CONSISTENCY_LINEARIZABLE')).ha),
    ),

    UpdateFarmSettings: unary<pb.UpdateFarmSettingsRequest__Output, pb.FarmSettings>(async (req) => {
      const paths = (req.updateMask?.paths ?? []).map(settingPath);
      if (paths.length === 0)
        throw invalidArgument(
          'update_mask',
          'name the settings to change, for example "host_failures_to_tolerate"',
        );
      if (!req.settings) throw invalidArgument('settings', 'is required');
      const settings = requireSettings(req.settings);
      await ctx.proposer.submit({ type: 'settings.update', paths, settings });
      return settingsView(ctx.machine.state.ha);
    }),

    WhatIfHostFailure: unary<pb.WhatIfHostFailureRequest__Output, pb.WhatIfHostFailureResponse>(
      async (req) => {
        if (req.hostIds.length < 1 || req.hostIds.length > 64)
          throw invalidArgument('host_ids', `name 1 to 64 hosts, not ${req.hostIds.length}`);
        const ids = req.hostIds.map((id, i) => requireHostId(`host_ids[${i}]`, id));
        const s = await readState(ctx, 'CONSISTENCY_LINEARIZABLE');
        for (const id of ids) if (!s.hosts.has(id)) throw notFound('host', id);
        const plan = whatIfHostFailure(s, [...new Set(ids)], Date.now(), ctx.scheduler);
        const restart = (vmId: string, hostId: string, reason: string): pb.WhatIfRestart => {
          const vm = s.vms.get(vmId)!;
          return {
            vmId,
            vmName: vm.config.name,
            priority: `HA_PRIORITY_${priorityOf(vm)}`,
            hostId,
            reason,
          };
        };
        return {
          restarts: plan.restarts.map((r) => restart(r.vmId, r.hostId, r.note)),
          stranded: [...plan.held, ...plan.stranded].map((x) => restart(x.vmId, '', x.reason)),
          leftIds: plan.left.map((l) => l.vmId),
        };
      },
    ),
  };
}

/**
 * Admission control at the edge, before a create or a start is proposed: refuses (or, with
 * admission_warn_only, returns a warning for the operation's message) when running the VM would
 * leave an HA VM nowhere to restart after the tolerated host failures. Undefined: admitted.
 */
export function admit(ctx: FarmContext, s: FarmState, ask: AdmissionAsk): string | undefined {
  const refusal = admissionRefusal(s, ask, Date.now(), ctx.scheduler);
  if (!refusal) return undefined;
  if (!s.ha.admissionWarnOnly) throw failedPrecondition(`cannot run VM '${ask.config.name}': ${refusal}`);
  return `warning: ${refusal}`;
}

const SNAKE: Record<string, (typeof HA_SETTING_NAMES)[number]> = Object.fromEntries(
  HA_SETTING_NAMES.map((n) => [n.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`), n]),
);

function settingPath(path: string): (typeof HA_SETTING_NAMES)[number] {
  const name = SNAKE[path];
  if (!name)
    throw invalidArgument(
      'update_mask',
      `'${path.slice(0, 64)}' is not a farm setting (${Object.keys(SNAKE).join(', ')})`,
    );
  return name;
}

const MAX: Record<string, number> = {
  hostFailuresToTolerate: 63,
  failoverMaxPerPeriod: 1_000,
  failoverPeriodMs: 366 * 86_400_000,
  maxMigrationsPerHost: 64,
};

function requireSettings(v: pb.FarmSettings__Output): HaSettings {
  const s: HaSettings = {
    hostFailuresToTolerate: v.hostFailuresToTolerate,
    admissionWarnOnly: v.admissionWarnOnly,
    failoverMaxPerPeriod: v.failoverMaxPerPeriod,
    failoverPeriodMs: Number(v.failoverPeriodMs),
    maxMigrationsPerHost: v.maxMigrationsPerHost,
  };
  for (const [key, max] of Object.entries(MAX)) {
    const value = s[key as keyof HaSettings] as number;
    if (!Number.isSafeInteger(value) || value > max)
      throw invalidArgument(
        `settings.${key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}`,
        `${value} is above ${max}`,
      );
  }
  return s;
}

function settingsView(h: HaSettings): pb.FarmSettings {
  return { ...h };
}

import { z } from 'zod';
import { defineCommand } from './command.js';
import type { FarmState } from './state.js';

/**
 * The farm's high-availability settings (ClusterService's FarmSettings), part of the replicated
 * state: every replica's failover and admission decisions read the same values. Zero means the
 * documented default, as in the proto, so a setting can be put back to its default.
 */
export interface HaSettings {
  /** Admission control: host failures whose HA VMs must still find room (vSphere HA's). */
  readonly hostFailuresToTolerate: number;
  /** Admission control warns instead of refusing. */
  readonly admissionWarnOnly: boolean;
  /** Failovers of one VM allowed per period; 0: the number of hosts minus 1 (Failover Clustering). */
  readonly failoverMaxPerPeriod: number;
  /** The threshold's period; 0: 6 hours. */
  readonly failoverPeriodMs: number;
  /** Migrations a host takes part in at once; 0: 2 (MaximumVirtualMachineMigrations). */
  readonly maxMigrationsPerHost: number;
}

export const DEFAULT_HA_SETTINGS: HaSettings = {
  hostFailuresToTolerate: 0,
  admissionWarnOnly: false,
  failoverMaxPerPeriod: 0,
  failoverPeriodMs: 0,
  maxMigrationsPerHost: 0,
};

/** Failover Clustering's default period for the failover threshold. */
export const DEFAULT_FAILOVER_PERIOD_MS = 6 * 3_600_000;
export const DEFAULT_MAX_MIGRATIONS_PER_HOST = 2;

/** The failover threshold in force: at most `max` failovers of one VM within `periodMs`. */
export function failoverThreshold(s: FarmState): { max: number; periodMs: number } {
  const h = s.ha;
  return {
    max: h.failoverMaxPerPeriod > 0 ? h.failoverMaxPerPeriod : Math.max(0, s.hosts.size - 1),
    periodMs: h.failoverPeriodMs > 0 ? h.failoverPeriodMs : DEFAULT_FAILOVER_PERIOD_MS,
  };
}

export function maxMigrationsPerHost(s: FarmState): number {
  return s.ha.maxMigrationsPerHost > 0 ? s.ha.maxMigrationsPerHost : DEFAULT_MAX_MIGRATIONS_PER_HOST;
}

export const HA_SETTING_NAMES = [
  'hostFailuresToTolerate',
  'admissionWarnOnly',
  'failoverMaxPerPeriod',
  'failoverPeriodMs',
  'maxMigrationsPerHost',
] as const satisfies readonly (keyof HaSettings)[];

const count = z.number().int().min(0).max(1_000_000);

/** Changes the settings named by `paths`; the edge checks the values' ranges. */
const updateSettings = defineCommand(
  'settings.update',
  z.object({
    paths: z.array(z.enum(HA_SETTING_NAMES)).max(HA_SETTING_NAMES.length),
    settings: z.object({
      hostFailuresToTolerate: count,
      admissionWarnOnly: z.boolean(),
      failoverMaxPerPeriod: count,
      failoverPeriodMs: z
        .number()
        .int()
        .min(0)
        .max(366 * 86_400_000),
      maxMigrationsPerHost: count,
    }),
  }),
  (s, p) => {
    const next: Record<string, unknown> = { ...s.ha };
    for (const path of p.paths) next[path] = p.settings[path];
    s.ha = next as unknown as HaSettings;
    return { settings: s.ha };
  },
);

export const settingsCommands = [updateSettings];

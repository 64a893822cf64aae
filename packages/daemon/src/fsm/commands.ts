import type { z } from 'zod';
import type { CommandDef } from './command.js';
import { drainCommands } from './drain.js';
import { failoverCommands } from './failover.js';
import { hostCommands } from './hosts.js';
import { migrationCommands } from './migrations.js';
import { settingsCommands } from './settings.js';
import { networkCommands } from './network.js';
import { vmCommands } from './vms.js';
import { workCommands } from './work.js';

/**
 * Every kind of command the farm state machine knows, by type. A new area (switches and NLB,
 * migrations) adds a module of definitions and lists it here; its commands then flow through the
 * same decoding, dedupe, events and snapshots.
 */
const ALL = [
  ...hostCommands,
  ...vmCommands,
  ...workCommands,
  ...migrationCommands,
  ...drainCommands,
  ...settingsCommands,
  ...failoverCommands,
  ...networkCommands,
] as const;

export const COMMANDS: ReadonlyMap<string, CommandDef> = new Map(ALL.map((d) => [d.type, d as CommandDef]));

type Def = (typeof ALL)[number];
export type CommandType = Def['type'];

/** A command as a proposer writes it: its type, its payload, a request id and its time. */
export type Command = {
  [D in Def as D['type']]: { type: D['type']; rid: string; t: number } & z.input<D['schema']>;
}[CommandType];

export type CommandOf<T extends CommandType> = Extract<Command, { type: T }>;

/** A command before the proposer stamps it with its request id and time. */
export type CommandBody = Command extends infer C
  ? C extends unknown
    ? Omit<C, 'rid' | 't'>
    : never
  : never;

/** The version of the command and snapshot formats this code writes. It reads every older one. */
export const FORMAT_VERSION = 1;

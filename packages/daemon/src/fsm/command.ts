import type { z } from 'zod';
import type { Changes } from './changes.js';
import { compile, type Check } from './check.js';
import type { FarmState } from './state.js';

/** What a command answers its proposer: plain JSON, the same on every replica. */
export type CommandResult = { ok: true; [key: string]: unknown } | { ok: false; error: ResultError };

export interface ResultError {
  code: string;
  message: string;
  field?: string;
}

/**
 * One kind of command: the shape of its payload and how it changes the state. A handler checks
 * everything before it changes anything, and throws FsmError to refuse. To add a kind (switches,
 * migrations), write a module of definitions like hosts.ts and list it in commands.ts.
 */
export interface CommandDef<S extends z.ZodType = z.ZodType> {
  type: string;
  schema: S;
  /**
   * The schema compiled to a plain function (check.ts), for commands with an entry per VM, where
   * zod's own parse would be most of the apply, and those applied for every VM's changes and
   * migrations; absent, the schema parses.
   */
  check?: Check<z.output<S>>;
  apply(
    s: FarmState,
    payload: z.output<S>,
    changes: Changes,
  ): Omit<CommandResult & { ok: true }, 'ok'> | void;
}

export function defineCommand<const T extends string, S extends z.ZodType>(
  type: T,
  schema: S,
  apply: CommandDef<S>['apply'],
  opts: { compiled?: boolean } = {},
): CommandDef<S> & { type: T } {
  return { type, schema, apply, ...(opts.compiled ? { check: compile(schema) } : {}) };
}

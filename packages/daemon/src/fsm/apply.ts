import { Changes } from './changes.js';
import { safeCheck, type Checked } from './check.js';
import type { CommandDef, CommandResult } from './command.js';
import { COMMANDS, FORMAT_VERSION, type Command } from './commands.js';
import { FsmError } from './errors.js';
import type { FarmEvent } from './model.js';
import { firstResult, rememberResult, type FarmState } from './state.js';

/**
 * The reducer: applies one log entry (a batch of commands) to the state, in order. It reads
 * nothing but the state and the entry, no clock, no randomness, so every replica that applies
 * the same log holds the same state and gives the same answers. It changes the state it is
 * given in place: copying a farm of fifty thousand VMs per command would cost more than the
 * command.
 */

export interface AppliedEntry {
  /** One result per command, in order. */
  results: CommandResult[];
  /** The changes, in revision order. */
  events: FarmEvent[];
}

/** An entry as it travels in the log: `{"v":1,"cmds":[...]}`. */
export function encodeEntry(commands: readonly Command[]): Uint8Array {
  return new TextEncoder().encode(JSON.stringify({ v: FORMAT_VERSION, cmds: commands }));
}

const refuse = (code: string, message: string): CommandResult => ({ ok: false, error: { code, message } });

/**
 * One decoder for every entry: without `stream` it keeps nothing from one call to the next (a
 * bad byte becomes U+FFFD, as a new one's would), and a new one per entry was a constructor
 * call and an object to collect on every apply of every replica.
 */
const utf8 = new TextDecoder();

export function applyEntry(s: FarmState, data: Uint8Array): AppliedEntry {
  let entry: unknown;
  try {
    entry = JSON.parse(utf8.decode(data));
  } catch {
    return {
      results: [refuse('INVALID_ARGUMENT', 'the entry is not a farm command batch: not JSON')],
      events: [],
    };
  }
  const { v, cmds } = (entry ?? {}) as { v?: unknown; cmds?: unknown };
  if (typeof v !== 'number' || !Array.isArray(cmds))
    return { results: [refuse('INVALID_ARGUMENT', 'the entry is not a farm command batch')], events: [] };
  if (v > FORMAT_VERSION || v < 1 || !Number.isInteger(v)) {
    // A newer daemon wrote it: this one cannot know what it means, and says so the same way on
    // every replica of its version. Upgrade every daemon before proposing a new format.
    const r = refuse(
      'UNIMPLEMENTED',
      `command format v${v} is not one this daemon reads (v1 to v${FORMAT_VERSION})`,
    );
    return { results: cmds.map(() => r), events: [] };
  }
  const results: CommandResult[] = [];
  const events: FarmEvent[] = [];
  for (const cmd of cmds) results.push(applyCommand(s, cmd, events));
  return { results, events };
}

function applyCommand(s: FarmState, cmd: unknown, events: FarmEvent[]): CommandResult {
  const { type, rid, t, ...payload } = (cmd && typeof cmd === 'object' ? cmd : {}) as Record<string, unknown>;
  if (typeof rid !== 'string' || rid.length === 0 || rid.length > 200)
    return refuse('INVALID_ARGUMENT', 'a command needs a request id (rid) of 1 to 200 characters');
  const first = firstResult(s, rid);
  if (first !== undefined) return first;
  const result = run(s, type, t, payload, events);
  rememberResult(s, rid, result);
  return result;
}

function run(
  s: FarmState,
  type: unknown,
  t: unknown,
  payload: Record<string, unknown>,
  events: FarmEvent[],
): CommandResult {
  const def = typeof type === 'string' ? COMMANDS.get(type) : undefined;
  if (!def) return refuse('INVALID_ARGUMENT', `unknown command type '${String(type).slice(0, 64)}'`);
  if (typeof t !== 'number' || !Number.isSafeInteger(t) || t < 0)
    return refuse('INVALID_ARGUMENT', `${def.type}: t must be the proposer's time in Unix ms`);
  const parsed = parse(def, payload);
  if (!parsed.success)
    return refuse(
      'INVALID_ARGUMENT',
      `${def.type}: ${parsed.path.join('.') || 'payload'}: ${parsed.message}`,
    );
  const changes = new Changes(s, t, events);
  try {
    const out = def.apply(s, parsed.data, changes) ?? {};
    return { ok: true, ...out };
  } catch (err) {
    if (err instanceof FsmError) return { ok: false, error: err.result() };
    // A bug: the same on every replica, so the replicas still agree; the edge logs it.
    return refuse('INTERNAL', `${def.type} failed: ${(err as Error).stack ?? String(err)}`);
  }
}

function parse(def: CommandDef, payload: unknown): Checked<unknown> {
  if (def.check) return safeCheck(def.check, payload);
  const parsed = def.schema.safeParse(payload);
  if (parsed.success) return { success: true, data: parsed.data };
  const issue = parsed.error.issues[0]!;
  return { success: false, path: issue.path as (string | number)[], message: issue.message };
}

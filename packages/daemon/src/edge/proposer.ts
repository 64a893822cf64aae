import { randomUUID } from 'node:crypto';
import { ApiError, internal, status, type Logger } from '@hyperfarm/api';
import { raftApiError, RaftArgumentError, type RaftNode } from '@hyperfarm/raft';
import {
  decodeResults,
  FORMAT_VERSION,
  type CommandBody,
  type CommandResult,
  type FarmStateMachine,
} from '../fsm/index.js';
import { utf8Pieces } from '../fsm/utf8.js';
import { realTimers, type Timers } from './timers.js';

/**
 * An encoded command (JSON.stringify of a CommandBody, `type` first; whole or in pieces) stamped
 * with its request id and time, as the pieces of `{"rid":...,"t":...,"type":...}`.
 */
export function stamped(json: string | readonly string[], rid: string, t: number): string[] {
  const first = typeof json === 'string' ? json : json[0]!;
  const pieces = [`{"rid":${JSON.stringify(rid)},"t":${t},${first.slice(1)}`];
  if (typeof json !== 'string') for (let i = 1; i < json.length; i++) pieces.push(json[i]!);
  return pieces;
}

/** The bytes of an entry of these stamped commands: `{"v":1,"cmds":[...]}`. */
export function entryBytes(commands: readonly (readonly string[])[]): Buffer {
  const pieces = [`{"v":${FORMAT_VERSION},"cmds":[`];
  commands.forEach((cmd, i) => {
    if (i > 0) pieces.push(',');
    for (const piece of cmd) pieces.push(piece);
  });
  pieces.push(']}');
  return utf8Pieces(pieces);
}

/** What a command answered, when it succeeded. */
export type Ok = Extract<CommandResult, { ok: true }>;

/** The type of an encoded command (its first key). */
const commandType = (json: string): string => /^\{"type":"([^"]*)"/.exec(json)?.[1] ?? 'command';

interface Pending {
  /** The stamped command's JSON, in pieces (written into the entry one by one, never joined). */
  pieces: readonly string[];
  resolve(r: CommandResult): void;
  reject(err: unknown): void;
}

/**
 * Sends commands to the log. Commands submitted in the same turn of the event loop share one
 * entry (up to `maxEntryBytes`, under RaftNode's 1 MiB limit), so thousands of creates a second
 * cost tens of entries, not thousands. Every command carries a request id: a batch whose fate is
 * unknown (a timeout, a leader change, a forward that lost its answer) is proposed again with the
 * same ids, and the state machine answers each command its first result instead of applying it
 * twice. A command's result is returned once this daemon has applied its entry, so a read that
 * follows sees it.
 */
export class Proposer {
  private queue: Pending[] = [];
  private queuedBytes = 0;
  private scheduled = false;

  constructor(
    private readonly raft: Pick<RaftNode, 'propose'>,
    private readonly machine: FarmStateMachine,
    private readonly logger: Logger,
    private readonly opts: {
      maxEntryBytes?: number;
      deadlineMs?: number;
      /** The clock and timers of the retry loop and of each command's time (a virtual clock in the farm simulator). */
      timers?: Timers;
      /** Request ids (seeded in the farm simulator, so a run replays exactly). */
      newRid?: () => string;
    } = {},
  ) {}

  private get timers(): Timers {
    return this.opts.timers ?? realTimers;
  }

  /** Proposes a command and returns its result; a refusal is thrown as an ApiError. */
  submit(cmd: CommandBody, rid?: string): Promise<Ok> {
    return this.submitEncoded(JSON.stringify(cmd), rid);
  }

  /**
   * As submit, for a command its caller has encoded (`json`: JSON.stringify of the CommandBody,
   * its `type` first, whole or as pieces whose concatenation it is), so a large command is not
   * encoded twice, nor its pieces joined. The entry holds the same bytes submit would write.
   */
  async submitEncoded(
    json: string | readonly string[],
    rid: string = (this.opts.newRid ?? randomUUID)(),
  ): Promise<Ok> {
    const result = await this.enqueue(stamped(json, rid, this.timers.now()));
    if (result.ok) return result;
    throw this.refusal(commandType(typeof json === 'string' ? json : json[0]!), result.error);
  }

  private enqueue(pieces: readonly string[]): Promise<CommandResult> {
    let length = 0;
    for (const p of pieces) length += p.length;
    return new Promise((resolve, reject) => {
      if (this.queuedBytes + length > this.maxBytes) this.flush();
      this.queue.push({ pieces, resolve, reject });
      this.queuedBytes += length;
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private get maxBytes(): number {
    return this.opts.maxEntryBytes ?? 512 * 1024;
  }

  private flush(): void {
    this.scheduled = false;
    const batch = this.queue;
    this.queue = [];
    this.queuedBytes = 0;
    if (batch.length === 0) return;
    const data = entryBytes(batch.map((p) => p.pieces));
    void this.propose(data).then(
      (results) => batch.forEach((p, i) => p.resolve(results[i]!)),
      (err: unknown) => batch.forEach((p) => p.reject(err)),
    );
  }

  /** Proposes an entry until it is applied here, or the deadline passes. */
  private async propose(data: Uint8Array): Promise<CommandResult[]> {
    const deadline = this.timers.now() + (this.opts.deadlineMs ?? 15_000);
    for (let attempt = 0; ; attempt++) {
      try {
        const { index, result } = await this.raft.propose(data);
        await this.machine.waitApplied(index);
        return decodeResults(result);
      } catch (err) {
        // Too big is a bug of ours, and retrying cannot help; anything else may pass on retry,
        // and the request ids make a retry of what did commit harmless.
        if (err instanceof RaftArgumentError || this.timers.now() >= deadline) throw raftApiError(err);
        await new Promise((r) => this.timers.set(() => r(undefined), Math.min(1_000, 25 * 2 ** attempt)));
      }
    }
  }

  /** A command's refusal as the caller's error (an entry's, for commands that answer per entry). */
  refusal(type: string, e: { code: string; message: string; field?: string }): ApiError {
    const code = status[e.code as keyof typeof status];
    if (code === undefined || code === status.INTERNAL) {
      // The state machine hit a bug; every replica agrees, and the stack is in the message.
      this.logger.error(
        { command: type, error: e.message },
        'a command failed unexpectedly in the state machine',
      );
      return internal(`${type} failed in the farm state machine; the daemon's log has the details`);
    }
    return new ApiError(code, e.message, e.field);
  }
}

import type { KvInput, KvOutput } from '../checker/kv-model.js';

/** A client command as it travels in a log entry. */
export interface KvCommand {
  /** The history id of the operation, so the proposer can answer its client. */
  op: number;
  input: KvInput;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeCommand(c: KvCommand): Uint8Array {
  return encoder.encode(JSON.stringify(c));
}

export function decodeCommand(data: Uint8Array): KvCommand {
  const c = JSON.parse(decoder.decode(data)) as KvCommand;
  if (typeof c.op !== 'number' || typeof c.input !== 'object')
    throw new Error('command: malformed log entry');
  return c;
}

/**
 * The replicated key-value state machine each simulated node runs. Like any Raft service it
 * applies each client operation at most once: a forwarded proposal that the network duplicated
 * may be committed twice, and the second copy must not take effect again (Raft paper §8).
 */
export class KvStateMachine {
  private readonly data = new Map<string, string>();
  private readonly results = new Map<number, KvOutput>();

  /** Applies command `c` unless it was applied before; returns its result either way. */
  applyOnce(c: KvCommand): KvOutput {
    if (this.results.has(c.op)) return this.results.get(c.op)!;
    const out = this.apply(c.input);
    this.results.set(c.op, out);
    return out;
  }

  apply(input: KvInput): KvOutput {
    switch (input.op) {
      case 'put':
        this.data.set(input.key, input.value);
        return null;
      case 'append':
        this.data.set(input.key, (this.data.get(input.key) ?? '') + input.value);
        return null;
      case 'get':
        return this.data.get(input.key) ?? null;
      case 'cas': {
        const current = this.data.get(input.key) ?? null;
        if (current !== input.expected) return false;
        this.data.set(input.key, input.value);
        return true;
      }
    }
  }

  get(key: string): string | null {
    return this.data.get(key) ?? null;
  }

  snapshot(): Uint8Array {
    return encoder.encode(
      JSON.stringify({ data: [...this.data.entries()].sort(), results: [...this.results.entries()] }),
    );
  }

  static restore(bytes: Uint8Array): KvStateMachine {
    const sm = new KvStateMachine();
    if (bytes.length === 0) return sm;
    const { data, results } = JSON.parse(decoder.decode(bytes)) as {
      data: [string, string][];
      results: [number, KvOutput][];
    };
    for (const [k, v] of data) sm.data.set(k, v);
    for (const [op, out] of results) sm.results.set(op, out);
    return sm;
  }
}

import type { StateMachine } from './raft-node.js';

/** A command of the test key-value store. */
export type KvCommand = { op: 'put'; key: string; value: string } | { op: 'delete'; key: string };

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export const encodeKvCommand = (c: KvCommand): Uint8Array => encoder.encode(JSON.stringify(c));

/**
 * The replicated map behind kv-server: a Map of strings. apply() answers with the previous value
 * (JSON `{"prev": string | null}`), which lets a test tell which write it overwrote.
 */
export class KvStateMachine implements StateMachine {
  readonly map = new Map<string, string>();
  appliedIndex = 0;

  apply(data: Uint8Array, index: number): Uint8Array {
    this.appliedIndex = index;
    let cmd: KvCommand;
    try {
      cmd = JSON.parse(decoder.decode(data)) as KvCommand;
    } catch {
      return encoder.encode(JSON.stringify({ error: 'command is not JSON' }));
    }
    const prev = this.map.get(cmd.key) ?? null;
    if (cmd.op === 'put') this.map.set(cmd.key, cmd.value);
    else if (cmd.op === 'delete') this.map.delete(cmd.key);
    return encoder.encode(JSON.stringify({ prev }));
  }

  get(key: string): string | undefined {
    return this.map.get(key);
  }

  snapshot(): Uint8Array {
    return encoder.encode(JSON.stringify([...this.map]));
  }

  restore(data: Uint8Array): void {
    this.map.clear();
    if (data.byteLength === 0) return;
    for (const [k, v] of JSON.parse(decoder.decode(data)) as Array<[string, string]>) this.map.set(k, v);
  }
}

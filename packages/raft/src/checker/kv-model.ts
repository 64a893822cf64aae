import { type Model, UNKNOWN } from './model.js';

/** Operations on a key-value store with one register per key. */
export type KvInput =
  | { op: 'put'; key: string; value: string }
  | { op: 'get'; key: string }
  | { op: 'append'; key: string; value: string }
  | { op: 'cas'; key: string; expected: string | null; value: string };

/**
 * get: the value read (null when the key was never written); cas: whether it swapped;
 * put and append: null (an acknowledgement carries no data).
 */
export type KvOutput = string | boolean | null;

/** The state of one partition: the value of its single key, or null when unwritten. */
type KvState = string | null;

/** A key-value register per key, partitioned by key so each key is checked on its own. */
export const kvModel: Model<KvState, KvInput, KvOutput> = {
  init: () => null,
  step(state, input, output) {
    switch (input.op) {
      case 'put':
        return input.value;
      case 'append':
        return (state ?? '') + input.value;
      case 'get':
        if (output === UNKNOWN) return state;
        return output === state ? state : undefined;
      case 'cas': {
        const swaps = state === input.expected;
        if (output === UNKNOWN) return swaps ? input.value : state;
        if (output !== swaps) return undefined;
        return swaps ? input.value : state;
      }
    }
  },
  stateKey: (state) => (state === null ? '\u0000' : 'v' + state),
  partition: (input) => input.key,
  describe(input, output) {
    const out = output === UNKNOWN ? '?' : JSON.stringify(output);
    switch (input.op) {
      case 'put':
        return `put(${input.key}, ${JSON.stringify(input.value)})`;
      case 'append':
        return `append(${input.key}, ${JSON.stringify(input.value)})`;
      case 'get':
        return `get(${input.key}) -> ${out}`;
      case 'cas':
        return `cas(${input.key}, ${JSON.stringify(input.expected)}, ${JSON.stringify(input.value)}) -> ${out}`;
    }
  },
};

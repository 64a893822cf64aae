/**
 * A sequential specification for the linearizability checker: what each operation does to a
 * state, and whether an observed output is possible from that state.
 */
export interface Model<State, Input, Output> {
  init(): State;
  /** The state after `input` produced `output`, or undefined when that output is impossible. */
  step(state: State, input: Input, output: Output | typeof UNKNOWN): State | undefined;
  /** A string that is equal for equal states: the search memoizes on it. */
  stateKey(state: State): string;
  /** Which independent partition an operation belongs to (e.g. its key); one partition if absent. */
  partition?(input: Input): string;
  describe?(input: Input, output: Output | typeof UNKNOWN): string;
}

/**
 * The output of an operation whose outcome nobody knows (a timeout, a crashed client): it
 * matches any output, so the operation may have taken effect or not.
 */
export const UNKNOWN: unique symbol = Symbol('unknown outcome');

import { ApiError, notFound, status, type Logger, type pb } from '@hyperfarm/api';
import { throwRaftApiError, type RaftNode } from '@hyperfarm/raft';
import type { FarmState, FarmStateMachine, OperationRecord } from '../fsm/index.js';
import type { SchedulerOptions } from '../scheduler/index.js';
import type { AgentPort } from './agent-port.js';
import type { ControllerRunner } from './controller-runner.js';
import type { LiveHosts } from './live-hosts.js';
import type { Proposer } from './proposer.js';
import { realTimers, type Timers } from './timers.js';

/** What the ClusterService handlers share. */
export interface FarmContext {
  raft: RaftNode;
  machine: FarmStateMachine;
  proposer: Proposer;
  runner: ControllerRunner;
  /** The hosts' live usage on any replica (a follower asks the leader); without it, the runner's. */
  liveHosts?: LiveHosts;
  port: AgentPort;
  logger: Logger;
  scheduler: SchedulerOptions;
  /** The clock of handlers' waits (the real one by default; virtual in the farm simulator). */
  timers?: Timers;
  /** http://host:port of this daemon's web console, empty when it serves none. */
  consoleAddress?: string;
}

/**
 * The farm state to answer a read from: by default only after a ReadIndex round (the answer
 * reflects every write acknowledged before the call, on a follower too); with STALE, this
 * daemon's state as it is.
 */
export async function readState(
  ctx: FarmContext,
  consistency: pb.Consistency__Output | number,
): Promise<FarmState> {
  if (consistency !== 'CONSISTENCY_STALE') await ctx.raft.read().catch(throwRaftApiError);
  return ctx.machine.state;
}

/**
 * Resolves when the operation is done, or after `timeoutMs` with it as it then is: woken by the
 * state machine as it applies, never polling. Undefined if the operation does not exist.
 */
export function waitOperation(
  machine: FarmStateMachine,
  opId: string,
  timeoutMs: number,
  cancelled?: (stop: () => void) => void,
  timers: Timers = realTimers,
): Promise<OperationRecord | undefined> {
  const now = () => machine.state.operations.get(opId);
  const op = now();
  if (!op || op.done) return Promise.resolve(op);
  return new Promise((resolve) => {
    const finish = () => {
      timers.clear(timer);
      unsubscribe();
      resolve(now());
    };
    const timer = timers.set(finish, timeoutMs);
    const unsubscribe = machine.onApplied((applied) => {
      if (
        applied.events.some(
          (e) =>
            e.kind === 'RESOURCE_KIND_OPERATION' && e.id === opId && (e.resource as OperationRecord).done,
        )
      )
        finish();
    });
    cancelled?.(finish);
  });
}

/** Waits for an operation a handler started, and throws its error if it failed. */
export async function operationOutcome(
  ctx: FarmContext,
  opId: string,
  timeoutMs = 60_000,
): Promise<OperationRecord> {
  const op = await waitOperation(ctx.machine, opId, timeoutMs, undefined, ctx.timers);
  if (!op) throw notFound('operation', opId);
  if (!op.done)
    throw new ApiError(
      status.DEADLINE_EXCEEDED,
      `still in progress after ${timeoutMs / 1000} s: operation ${opId}; follow it with WaitOperation`,
    );
  if (op.error) throw new ApiError(status[op.error.code], op.error.message);
  return op;
}

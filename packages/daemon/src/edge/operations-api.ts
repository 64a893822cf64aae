import { ApiError, invalidArgument, notFound, serverStream, status, unary, type pb } from '@hyperfarm/api';
import type * as grpc from '@grpc/grpc-js';
import { throwRaftApiError } from '@hyperfarm/raft';
import {
  eventView,
  operationView,
  type FarmEvent,
  type FarmState,
  type ResourceKindName,
} from '../fsm/index.js';
import { readState, waitOperation, type FarmContext } from './farm-context.js';
import { memberViews } from './membership.js';
import { page, requireEnum, requireRef } from './requests.js';

const KINDS = [
  'RESOURCE_KIND_HOST',
  'RESOURCE_KIND_VM',
  'RESOURCE_KIND_CHECKPOINT',
  'RESOURCE_KIND_MIGRATION',
  'RESOURCE_KIND_SWITCH',
  'RESOURCE_KIND_NLB_CLUSTER',
  'RESOURCE_KIND_OPERATION',
] as const;

/** A watcher that lets this many events pile up unread is dropped: it resumes from its revision. */
const MAX_BUFFERED_EVENTS = 10_000;
const DEFAULT_WAIT_MS = 30_000;
const MAX_WAIT_MS = 300_000;

/** ClusterService: operations, the event stream and the control plane's status. */
export function operationHandlers(ctx: FarmContext): Partial<pb.ClusterServiceHandlers> {
  const operation = (s: FarmState, id: string): pb.Operation => {
    const op = s.operations.get(requireRef('id', id));
    if (!op) throw notFound('operation', id);
    return operationView(op);
  };

  return {
    GetOperation: unary<pb.GetOperationRequest__Output, pb.Operation>(async (req) => {
      requireRef('id', req.id);
      return operation(await readState(ctx, req.consistency), req.id);
    }),

    ListOperations: unary<pb.ListOperationsRequest__Output, pb.ListOperationsResponse>(async (req) => {
      const s = await readState(ctx, req.consistency);
      const ops = [...s.operations.values()].filter((o) => !req.pendingOnly || !o.done);
      const p = page('operations', ops, (o) => o.id, req);
      return { operations: p.items.map(operationView), nextPageToken: p.nextPageToken };
    }),

    WaitOperation: unary<pb.WaitOperationRequest__Output, pb.Operation>(async (req, call) => {
      requireRef('id', req.id);
      const timeoutMs = req.timeoutMs === 0 ? DEFAULT_WAIT_MS : req.timeoutMs;
      if (timeoutMs > MAX_WAIT_MS)
        throw invalidArgument('timeout_ms', `${req.timeoutMs} is above ${MAX_WAIT_MS}`);
      operation(await readState(ctx, 'CONSISTENCY_LINEARIZABLE'), req.id);
      const op = await waitOperation(ctx.machine, req.id, timeoutMs, (stop) => call.on('cancelled', stop));
      if (!op) throw notFound('operation', req.id);
      return operationView(op);
    }),

    Watch: serverStream<pb.WatchRequest__Output, pb.Event>((req, call) => watch(ctx, req, call)),

    GetClusterStatus: unary<pb.GetClusterStatusRequest__Output, pb.ClusterStatus>(() => {
      const r = ctx.raft.status();
      const s = ctx.machine.state;
      return {
        members: memberViews(ctx.raft),
        leaderId: r.leader,
        leaderAddress: r.addresses[r.leader] ?? '',
        term: r.term,
        commitIndex: r.commit,
        appliedIndex: r.applied,
        revision: s.revision,
        oldestRevision: s.events.oldestResumable,
        answeredBy: r.id,
        consoleAddress: ctx.consoleAddress ?? '',
      };
    }),
  };
}

/**
 * Where Watch writes its events: a gRPC stream, or the console gateway's socket in this process
 * (docs/console.md). Either way the same rules choose the events; only the writing differs.
 */
export interface EventSink {
  write(event: pb.Event): void;
  /** Events written and not yet taken by the reader: past MAX_BUFFERED_EVENTS it is dropped. */
  buffered(): number;
  /** Calls `stop` when the reader goes away. */
  onClose(stop: () => void): void;
}

async function watch(
  ctx: FarmContext,
  req: pb.WatchRequest__Output,
  call: grpc.ServerWritableStream<pb.WatchRequest__Output, pb.Event>,
): Promise<void> {
  return watchEvents(ctx, req, {
    write: (event) => call.write(event),
    buffered: () => call.writableLength,
    onClose: (stop) => {
      call.on('cancelled', stop);
      call.on('close', stop);
    },
  });
}

/**
 * Streams committed changes: from revision 0, the current state as PUT events (each with the
 * revision that last changed it) and then every change; from a revision, the kept changes after
 * it and then every change. Revisions only grow. Subscribing and reading the backlog happen in
 * one turn of the event loop, so nothing falls between them. Resolves when the reader goes
 * away; rejects with the status that ends the stream (INVALID_ARGUMENT, OUT_OF_RANGE,
 * RESOURCE_EXHAUSTED, or the read barrier's).
 */
export async function watchEvents(
  ctx: FarmContext,
  req: pb.WatchRequest__Output,
  sink: EventSink,
): Promise<void> {
  const kinds = new Set(req.kinds.map((k) => requireEnum('kinds', k, KINDS)));
  const wanted = (e: FarmEvent) => kinds.size === 0 || kinds.has(e.kind);
  if (!Number.isSafeInteger(req.fromRevision))
    throw invalidArgument('from_revision', `${req.fromRevision} is not a revision`);
  // A linearizable start: the stream begins at or after every write acknowledged before it.
  await ctx.raft.read().catch(throwRaftApiError);

  let last = 0;
  const send = (events: Iterable<FarmEvent>): void => {
    for (const e of events) {
      if (e.revision <= last) continue;
      last = e.revision;
      if (wanted(e)) sink.write(eventView(ctx.machine.state, e));
    }
  };

  return new Promise<void>((resolve, reject) => {
    let done = false;
    const finish = (err?: ApiError) => {
      if (done) return;
      done = true;
      unsubscribe();
      unrestored();
      if (err) reject(err);
      else resolve();
    };
    const outOfRange = (from: number) =>
      new ApiError(
        status.OUT_OF_RANGE,
        `revision ${from} is no longer kept: resume from revision ${ctx.machine.state.events.oldestResumable} or later, or from 0 for the current state`,
      );
    const unsubscribe = ctx.machine.onApplied((applied) => {
      send(applied.events);
      if (sink.buffered() > MAX_BUFFERED_EVENTS)
        finish(
          new ApiError(status.RESOURCE_EXHAUSTED, `the watcher fell behind: resume from revision ${last}`),
        );
    });
    const unrestored = ctx.machine.onRestored(() => {
      const backlog = ctx.machine.state.events.after(last);
      if (backlog) send(backlog);
      else finish(outOfRange(last));
    });
    sink.onClose(() => finish());

    const s = ctx.machine.state;
    if (req.fromRevision === 0) {
      send(
        currentState(s)
          .filter(wanted)
          .sort((a, b) => a.revision - b.revision),
      );
      last = s.revision;
    } else {
      const backlog = s.events.after(req.fromRevision);
      if (!backlog) return finish(outOfRange(req.fromRevision));
      last = req.fromRevision;
      send(backlog);
    }
  });
}

/**
 * Every resource as a PUT event at the revision that last changed it, with that change's time
 * when the event window still holds it (0 otherwise).
 */
function currentState(s: FarmState): FarmEvent[] {
  const put = <K extends ResourceKindName>(kind: K, resource: { id: string; revision: number }) => {
    const timeMs = s.events.at(resource.revision)?.timeMs ?? 0;
    return {
      revision: resource.revision,
      type: 'EVENT_TYPE_PUT',
      kind,
      id: resource.id,
      timeMs,
      resource,
    } as FarmEvent;
  };
  return [
    ...[...s.hosts.values()].map((r) => put('RESOURCE_KIND_HOST', r)),
    ...[...s.vms.values()].map((r) => put('RESOURCE_KIND_VM', r)),
    ...[...s.checkpoints.values()].map((r) => put('RESOURCE_KIND_CHECKPOINT', r)),
    ...[...s.operations.values()].map((r) => put('RESOURCE_KIND_OPERATION', r)),
  ];
}

import { z } from 'zod';
import type { DrillReportEntry } from './drill-reports.js';

/**
 * The console's WebSocket protocol (docs/console.md): JSON text frames, one message each.
 * Messages from the browser are checked here before anything else reads them.
 */

export const PROTOCOL_VERSION = 1;

const callId = z.union([z.number().int().min(0).max(Number.MAX_SAFE_INTEGER), z.string().min(1).max(64)]);

/** What a browser may send. */
export const clientMessage = z.discriminatedUnion('type', [
  z
    .object({
      type: z.literal('call'),
      /** Echoed in the answer, to pair it with the call. */
      id: callId,
      /** A unary ClusterService method, as in the proto: "CreateVm", "ListHosts"... */
      method: z.string().regex(/^[A-Z][A-Za-z]{1,63}$/, 'expected a method name such as ListHosts'),
      /** The request message in the gRPC JSON mapping (camelCase fields). */
      request: z.record(z.string(), z.unknown()).default({}),
    })
    .strict(),
  z
    .object({
      type: z.literal('watch'),
      /** As WatchRequest.from_revision: 0 starts with the current state. */
      fromRevision: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
      /** As WatchRequest.kinds; empty or absent means all. */
      kinds: z.array(z.string().max(64)).max(16).default([]),
    })
    .strict(),
  z.object({ type: z.literal('unwatch') }).strict(),
  z.object({ type: z.literal('consoles'), id: callId }).strict(),
  /** Lists the drill reports in the daemon's reports folder. */
  z.object({ type: z.literal('drills'), id: callId }).strict(),
  z
    .object({
      type: z.literal('drill'),
      id: callId,
      /** A report's folder, relative to the reports folder, as `drills` lists it. */
      path: z.string().min(1).max(512),
    })
    .strict(),
]);

export type ClientMessage = z.infer<typeof clientMessage>;
export type CallId = z.infer<typeof callId>;

/** A failed call, or a refused message, as the browser receives it. */
export interface WireError {
  /** The gRPC status code (3 INVALID_ARGUMENT, 9 FAILED_PRECONDITION, 12 UNIMPLEMENTED...). */
  code: number;
  /** Its name, as in the gRPC documentation. */
  codeName: string;
  /** The status message: names the object and the reason. */
  message: string;
  /** For INVALID_ARGUMENT, the offending field as a dotted path. */
  field?: string;
  /** For UNAVAILABLE from a replica that does not lead, the leader's id. */
  leaderId?: string;
}

/** A daemon's console, as `consoles` lists them. */
export interface ConsoleEndpoint {
  /** The daemon's id. */
  id: string;
  /** http://host:port of its console. */
  address: string;
}

/** What the gateway sends. */
export type ServerMessage =
  | { type: 'hello'; protocol: number; daemonId: string; consoles: ConsoleEndpoint[] }
  | { type: 'result'; id: CallId; response: unknown }
  | { type: 'error'; id?: CallId; error: WireError }
  | { type: 'event'; event: unknown }
  /** Several events of the stream, in revision order, that came together. */
  | { type: 'events'; events: unknown[] }
  | { type: 'watchError'; error: WireError }
  | { type: 'resync'; fromRevision: number; reason: string }
  | { type: 'consoles'; id: CallId; consoles: ConsoleEndpoint[] }
  | { type: 'drills'; id: CallId; folder: string; reports: DrillReportEntry[] }
  | { type: 'drill'; id: CallId; path: string; report: unknown };

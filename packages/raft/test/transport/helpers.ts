import { createLogger, createServer, type pb, type RunningServer } from '@hyperfarm/api';
import { makeMessage } from '../../src/core/entries.js';
import { type Message, MessageType } from '../../src/types.js';

/** A heartbeat at term 1 from `from` to `to`, with whatever fields `over` sets. */
export function message(over: Partial<Message> & Pick<Message, 'from' | 'to'>): Message {
  return makeMessage({ type: MessageType.Heartbeat, term: 1, ...over });
}

/** Polls `check` until it returns true; fails after `ms`. Never a fixed sleep for correctness. */
export async function waitFor(what: string, check: () => boolean, ms = 10_000, everyMs = 10): Promise<void> {
  const deadline = performance.now() + ms;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Like waitFor, for a check that has to ask something over the network. */
export async function waitForAsync(
  what: string,
  check: () => Promise<boolean>,
  ms = 10_000,
  everyMs = 20,
): Promise<void> {
  const deadline = performance.now() + ms;
  while (!(await check().catch(() => false))) {
    if (performance.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** A gRPC server serving one node's RaftService, as a program would make it. */
export function serveRaft(
  service: { service: pb.RaftServiceHandlers },
  address = '127.0.0.1:0',
): Promise<RunningServer> {
  const logger = createLogger({ program: 'raft-test', id: 'test', level: 'error' });
  return createServer({ logger }).add('raft', service.service).listen(address);
}

import { EventEmitter } from 'node:events';
import type { pb } from '@hyperfarm/api';

/** A socket whose unsent bytes the test sets, recording what is sent. */
export class FakeSocket extends EventEmitter {
  readonly OPEN = 1;
  readyState = 1;
  bufferedAmount = 0;
  readonly sent: Record<string, unknown>[] = [];
  send(text: string): void {
    this.sent.push(JSON.parse(text) as Record<string, unknown>);
    this.bufferedAmount += text.length;
  }
  /** The events sent, one by one, whether they went alone or together. */
  events(): pb.Event__Output[] {
    return this.sent.flatMap((m) =>
      m.type === 'event' ? [m.event] : m.type === 'events' ? (m.events as unknown[]) : [],
    ) as pb.Event__Output[];
  }
  browserSends(message: unknown): void {
    this.emit('message', Buffer.from(JSON.stringify(message)), false);
  }
}

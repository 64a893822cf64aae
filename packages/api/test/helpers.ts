import { Writable } from 'node:stream';
import { pino } from 'pino';
import type { Logger } from '../src/index.js';

export interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}

/** A logger whose JSON lines a test can read back. */
export function captureLogger(): { logger: Logger; lines(): LogLine[] } {
  const text: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      text.push(chunk.toString());
      done();
    },
  });
  const logger = pino({ level: 'info' }, sink);
  return {
    logger,
    lines: () =>
      text
        .join('')
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as LogLine),
  };
}

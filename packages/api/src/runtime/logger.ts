import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * Structured JSON logs on stdout. Keys that may hold secrets are redacted wherever they appear,
 * so a config or request logged whole never leaks them.
 */
export function createLogger(opts: { program: string; id: string; level: string }): Logger {
  return pino({
    name: opts.program,
    level: opts.level,
    base: { program: opts.program, id: opts.id, pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: {
      paths: ['password', 'token', 'secret', 'tlsKey', '*.password', '*.token', '*.secret', '*.tlsKey'],
      censor: '[redacted]',
    },
  });
}

import { writeFileSync, renameSync } from 'node:fs';
import type { Logger } from 'pino';
import { ConfigError } from './config.js';

/**
 * Runs a program's main: a configuration error prints one clear line and exits 2; SIGINT or
 * SIGTERM calls `stop` once and exits 0 when it finishes; a second signal exits at once.
 */
export async function runProgram(
  program: string,
  start: () => Promise<{ logger: Logger; stop: () => Promise<void> }>,
): Promise<void> {
  let running: { logger: Logger; stop: () => Promise<void> };
  try {
    running = await start();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${program}: ${err.message}\n`);
      process.exit(2);
    }
    const e = err as { code?: string };
    if (e.code === 'commander.helpDisplayed') process.exit(0);
    process.stderr.write(`${program}: failed to start: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  }
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      running.logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    running.logger.info({ signal }, 'shutting down');
    running.stop().then(
      () => {
        running.logger.info('stopped');
        running.logger.flush();
        process.exit(0);
      },
      (err: unknown) => {
        running.logger.error({ err }, 'error while shutting down');
        running.logger.flush();
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}

/** Writes a small JSON file atomically (write, then rename), so a reader never sees half of it. */
export function writeJsonAtomic(path: string, value: unknown): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(value, null, 2)}\n`);
  renameSync(tmp, path);
}

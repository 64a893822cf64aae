import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { FarmProcess } from '@hyperfarm/api';

export interface Child {
  spec: FarmProcess;
  process: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  running: boolean;
}

/**
 * Starts a farm process in its own process group, with stdout and stderr in its log file. Its
 * own group keeps the terminal's Ctrl-C away from it: the launcher alone decides how children
 * stop, so each gets exactly one SIGTERM.
 */
export function startChild(spec: Omit<FarmProcess, 'pid'>, script: string, args: string[]): Child {
  mkdirSync(dirname(spec.log), { recursive: true });
  const fd = openSync(spec.log, 'a');
  const proc = spawn(process.execPath, [script, ...args], { stdio: ['ignore', fd, fd], detached: true });
  closeSync(fd);
  const child: Child = {
    spec: { ...spec, pid: proc.pid ?? -1 },
    process: proc,
    running: true,
    exited: new Promise((resolve) => {
      proc.once('exit', (code, signal) => {
        child.running = false;
        resolve({ code, signal });
      });
    }),
  };
  return child;
}

/** SIGTERM to every running child, then SIGKILL to any still running after `graceMs`. */
export async function stopChildren(children: Child[], graceMs: number): Promise<void> {
  for (const c of children) if (c.running) c.process.kill('SIGTERM');
  const all = Promise.all(children.map((c) => c.exited));
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), graceMs);
  });
  if ((await Promise.race([all, timeout])) === 'timeout') {
    for (const c of children) if (c.running) c.process.kill('SIGKILL');
    await all;
  }
  clearTimeout(timer);
}

/** The last lines of a log file, to show why a child failed. */
export function tail(path: string, lines = 15): string {
  try {
    return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

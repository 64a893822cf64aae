import { type Command, Option } from 'commander';
import { SingleBar } from 'cli-progress';
import type { pb } from '@hyperfarm/api';
import { HyperfarmClient } from '../client/hyperfarm-client.js';
import { resolveEndpoints } from '../client/endpoints.js';
import { OUTPUT_FORMATS, render, type OutputFormat } from './output.js';
import { UsageError, type CliIo } from './vhd.js';

/** The options every command that talks to a farm takes. */
export interface FarmOptions {
  endpoints?: string;
  daemon?: string;
  data: string;
  output: OutputFormat;
  verbose?: boolean;
  timeout: string;
  waitTimeout: string;
  wait?: boolean;
  /** The command's own options. */
  [option: string]: unknown;
}

/** Adds the farm options: where the farm is, the output format, --verbose and the deadline. */
export function farmOptions(cmd: Command): Command {
  return (
    cmd
      .option(
        '-e, --endpoints <list>',
        'daemon addresses, host:port[,host:port...] (default: $HYPERFARM_ENDPOINTS, then .hyperfarm/farm.json)',
      )
      .addOption(new Option('--daemon <list>', 'the same as --endpoints').hideHelp())
      .option('--data <dir>', "a local farm's data folder, whose farm.json lists its daemons", '.hyperfarm')
      .addOption(
        new Option('-o, --output <format>', 'output format').choices(OUTPUT_FORMATS).default('table'),
      )
      .option('-v, --verbose', 'say which daemon answered, each retry, and the details of an error')
      .option('--timeout <ms>', 'give up on a call (retries included) after this long', '30000')
      // Waiting is not a call: a Windows Server 2008 guest alone boots for 30 s, and a 16 GiB
      // migration takes minutes, so a wait gets its own, longer, deadline.
      .option('--wait-timeout <ms>', 'give up waiting for an operation to finish after this long', '600000')
  );
}

/** Adds --no-wait to a command that starts long work. */
export function waitOption(cmd: Command): Command {
  return cmd.option('--no-wait', 'print the started operation and return without waiting for it');
}

/** What a command's action gets: the client, the options and the ways to print. */
export interface Ctx {
  client: HyperfarmClient;
  opts: FarmOptions;
  io: CliIo;
  /** Prints `value` as JSON/YAML, or as `asTable()` makes it. */
  print(value: unknown, asTable: () => string): void;
  /** A line on stderr with --verbose. */
  verbose(line: string): void;
  /** The terminal's width for tables, when stdout is one. */
  width: number | undefined;
  /** Waits for an operation (unless --no-wait), with a progress bar on a terminal. */
  finish(op: pb.Operation__Output, asTable: (done: pb.Operation__Output) => string): Promise<void>;
}

function milliseconds(value: string, flag: string): number {
  const ms = Number(value);
  if (!Number.isInteger(ms) || ms < 1) throw new UsageError(`${flag}: '${value}' is not a number of ms`);
  return ms;
}

export function connect(io: CliIo, opts: FarmOptions): Ctx {
  const timeout = milliseconds(opts.timeout, '--timeout');
  const waitTimeoutMs = milliseconds(opts.waitTimeout, '--wait-timeout');
  const given = opts.endpoints ?? opts.daemon;
  const { endpoints, from } = resolveEndpoints({
    flag: given,
    env: io.env ?? process.env,
    dataDir: opts.data,
  });
  const verbose = (line: string) => {
    if (opts.verbose) io.stderr(`hyperfarm: ${line}\n`);
  };
  verbose(`daemons ${endpoints.join(', ')} (from ${from})`);
  const client = new HyperfarmClient({
    endpoints,
    deadlineMs: timeout,
    onRetry: (r) =>
      verbose(
        `${r.method} at ${r.endpoint} failed (${r.error.message}); retrying at ${r.next} in ${r.delayMs} ms`,
      ),
  });
  const ctx: Ctx = {
    client,
    opts,
    io,
    verbose,
    width: io.columns,
    print: (value, asTable) => io.stdout(render(opts.output, value, asTable)),
    finish: async (op, asTable) => {
      verbose(`operation ${op.id} (${op.kind}) started`);
      if (opts.wait === false)
        return ctx.print(
          op,
          () => `started operation ${op.id} (${op.kind}): \`hyperfarm op wait ${op.id}\`\n`,
        );
      const done = await waitWithProgress(ctx, op, waitTimeoutMs);
      ctx.print(done, () => asTable(done));
    },
  };
  return ctx;
}

/** Waits for `op`, showing a bar on stderr when a person watches a terminal and wants a table. */
async function waitWithProgress(
  ctx: Ctx,
  op: pb.Operation__Output,
  timeoutMs: number,
): Promise<pb.Operation__Output> {
  if (!ctx.io.progress || ctx.opts.output !== 'table') {
    return ctx.client.wait(op, {
      timeoutMs,
      onProgress: (o) => ctx.verbose(`${o.id} ${o.kind}: ${o.progressPercent}% ${o.message}`),
    });
  }
  const bar = new SingleBar({
    format: `${op.kind} {bar} {percentage}% {message}`,
    stream: process.stderr,
    hideCursor: true,
    clearOnComplete: true,
  });
  bar.start(100, op.progressPercent, { message: op.message });
  try {
    return await ctx.client.wait(op, {
      timeoutMs,
      intervalMs: 250,
      onProgress: (o) => bar.update(o.progressPercent, { message: o.message }),
    });
  } finally {
    bar.stop();
  }
}

/**
 * A commander action that talks to the farm: it connects with the command's options, runs, and
 * closes the client. `fn` gets the positional arguments.
 */
export function farmAction(io: CliIo, fn: (ctx: Ctx, ...args: string[]) => Promise<void>) {
  return async (...all: unknown[]): Promise<void> => {
    const cmd = all[all.length - 1] as Command;
    const ctx = connect(io, cmd.opts<FarmOptions>());
    try {
      await fn(ctx, ...(all.slice(0, -2) as string[]));
    } finally {
      ctx.client.close();
    }
  };
}

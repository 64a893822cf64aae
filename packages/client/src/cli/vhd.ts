import {
  type CheckReport,
  type DiskKind,
  FileSystemProvider,
  type StorageProvider,
  VhdArgumentError,
  VhdDisk,
  MergeJob,
  type MergeProgress,
  checkVhd,
  compactVhd,
  createVhd,
  formatSize,
  parseSize,
  resizeVhd,
} from '@hyperfarm/vhd';
import { isServiceError, status } from '@hyperfarm/api';
import { HyperfarmError } from '../client/errors.js';
import { OperationFailedError } from '../client/operations.js';
import { EndpointError } from '../client/endpoints.js';
import { Command, CommanderError, Option } from 'commander';
import { renderCheck, renderInfo, renderMergeProgress } from './vhd-output.js';
import { OUTPUT_FORMATS, render, type OutputFormat } from './output.js';

/** Where a command writes, and the file system it uses: injected by tests. */
export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  provider?: StorageProvider;
  /** Show a progress line on stderr during long operations (a terminal is watching). */
  progress?: boolean;
  /** The terminal's width, when stdout is one: tables are cut to fit it. */
  columns?: number | undefined;
  /** Where HYPERFARM_ENDPOINTS is read (default: process.env). */
  env?: NodeJS.ProcessEnv;
}

export const processIo: CliIo = {
  stdout: (t) => process.stdout.write(t),
  stderr: (t) => process.stderr.write(t),
  progress: process.stderr.isTTY === true,
  columns: process.stdout.isTTY ? process.stdout.columns : undefined,
};

/** A bad command line: exit code 2. Every other failure exits 1. */
export class UsageError extends Error {}

/** A finished operation that must still exit non-zero (e.g. `check` found problems). */
export class ExitCode extends Error {
  constructor(readonly code: number) {
    super(`exit ${code}`);
  }
}

const OPTION_FOR_FIELD: Record<string, string> = {
  size: '--size',
  blockSize: '--block-size',
  parent: '--parent',
  type: '--type',
};

/** Our library names fields as the API does; say them as the command line does. */
function asUsage(err: VhdArgumentError): UsageError {
  return new UsageError(`${OPTION_FOR_FIELD[err.field] ?? err.field}: ${err.reason}`);
}

function sizeOption(text: string | undefined, option: string): number | undefined {
  if (text === undefined) return undefined;
  try {
    return parseSize(text, option);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/** `hyperfarm vhd ...`: create, inspect, check, merge, compact and resize VHD files. */
export function vhdCommand(io: CliIo = processIo): Command {
  const provider = io.provider ?? new FileSystemProvider();
  const vhd = new Command('vhd').description(
    'create and maintain VHD virtual disk files (fixed, dynamic, differencing)',
  );

  vhd
    .command('new')
    .description('create a VHD, like Hyper-V New-VHD')
    .argument('<file>', 'path of the new disk')
    .addOption(
      new Option('--type <type>', 'disk type')
        .choices(['fixed', 'dynamic', 'differencing'])
        .makeOptionMandatory(),
    )
    .option('--size <size>', 'virtual size, e.g. 10G or 512M (not for differencing disks)')
    .option('--parent <file>', 'parent disk of a differencing disk')
    .option('--block-size <size>', 'block size of dynamic and differencing disks (default 2M)')
    .option('--exact-size', 'keep the size exactly instead of rounding up to a CHS geometry')
    .action(
      async (
        file: string,
        opts: { type: DiskKind; size?: string; parent?: string; blockSize?: string; exactSize?: boolean },
      ) => {
        const size = sizeOption(opts.size, '--size');
        const blockSize = sizeOption(opts.blockSize, '--block-size');
        if (opts.type === 'differencing' && !opts.parent)
          throw new UsageError('--parent: is required for a differencing disk');
        if (opts.type !== 'differencing' && size === undefined) {
          throw new UsageError(`--size: is required for a ${opts.type} disk`);
        }
        const disk = await createVhd(file, {
          type: opts.type,
          provider,
          ...(size !== undefined ? { size } : {}),
          ...(blockSize !== undefined ? { blockSize } : {}),
          ...(opts.parent ? { parentPath: opts.parent } : {}),
          ...(opts.exactSize ? { exactSize: true } : {}),
        });
        const info = await disk.info();
        await disk.close();
        io.stdout(
          `created ${info.type} disk ${info.path}: virtual size ${formatSize(info.virtualSize)} (${info.virtualSize} bytes)` +
            (info.parentPath ? `, parent ${info.parentPath}` : '') +
            '\n',
        );
      },
    );

  vhd
    .command('info')
    .description('show type, virtual size, allocated size and parent chain')
    .argument('<file>', 'disk to describe')
    .addOption(new Option('-o, --output <format>', 'output format').choices(OUTPUT_FORMATS).default('table'))
    .action(async (file: string, opts: { output: OutputFormat }) => {
      const disk = await VhdDisk.open(file, { provider, readOnly: true });
      try {
        const info = await disk.info();
        const parents: (typeof info)[] = [];
        for (let p = disk.parent; p; p = p.parent) parents.push(await p.info());
        io.stdout(render(opts.output, { ...info, parents }, () => renderInfo(info, parents)));
      } finally {
        await disk.close();
      }
    });

  vhd
    .command('check')
    .description('list every inconsistency; exits 1 if there is any')
    .argument('<file>', 'disk to check')
    .addOption(new Option('-o, --output <format>', 'output format').choices(OUTPUT_FORMATS).default('table'))
    .action(async (file: string, opts: { output: OutputFormat }) => {
      const report: CheckReport = await checkVhd(file, { provider });
      io.stdout(render(opts.output, report, () => renderCheck(report)));
      if (!report.ok) throw new ExitCode(1);
    });

  vhd
    .command('merge')
    .description(
      'merge a differencing disk into its parent (then delete it), or its parent into it (then delete the parent)',
    )
    .argument('<file>', 'the differencing disk of the pair')
    .addOption(
      new Option(
        '--into <which>',
        'where the data goes: parent (FILE goes away) or child (FILE absorbs its parent, which goes away)',
      )
        .choices(['parent', 'child'])
        .default('parent'),
    )
    .option('--keep-child', 'with --into parent: keep FILE after merging')
    .option('--keep-parent', "with --into child: keep FILE's old parent after merging")
    .action(
      async (file: string, opts: { into: 'parent' | 'child'; keepChild?: boolean; keepParent?: boolean }) => {
        if (opts.into === 'child' && opts.keepChild)
          throw new UsageError('--keep-child: only with --into parent');
        if (opts.into === 'parent' && opts.keepParent)
          throw new UsageError('--keep-parent: only with --into child');
        // The state file lets a merge interrupted by a crash resume: run the same command again.
        const stateFile = `${provider.resolve(file)}.merge-state`;
        const resuming = await provider.exists(stateFile);
        const job = await MergeJob.open({
          childPath: file,
          into: opts.into,
          provider,
          stateFile,
          deleteMerged: !(opts.keepChild || opts.keepParent),
        });
        let shown = '';
        const show = (p: MergeProgress) => {
          const line = renderMergeProgress(p);
          if (line === shown) return;
          shown = line;
          io.stderr(`\r${line}`);
        };
        try {
          if (resuming) io.stderr(`resuming the merge recorded in ${stateFile}\n`);
          await job.run(io.progress ? show : undefined);
          if (shown) io.stderr('\n');
        } finally {
          await job.close();
        }
        const r = job.result();
        const moved = `${r.blocksMerged} blocks, ${formatSize(r.bytesMerged)}`;
        if (opts.into === 'parent') {
          io.stdout(`merged ${file} into ${r.parentPath}: ${moved}\n`);
        } else {
          const after = await VhdDisk.open(file, { provider, readOnly: true });
          const now = after.parent ? `its parent is now ${after.parent.path}` : 'it is now a dynamic disk';
          await after.close();
          io.stdout(`merged ${r.mergedPath} into ${file}: ${moved}; ${now}\n`);
        }
      },
    );

  vhd
    .command('compact')
    .description('drop the empty blocks of a dynamic or differencing disk')
    .argument('<file>', 'disk to compact')
    .action(async (file: string) => {
      const r = await compactVhd(file, { provider });
      io.stdout(
        `compacted ${file}: ${r.blocksBefore} -> ${r.blocksAfter} blocks, ` +
          `${formatSize(r.fileSizeBefore)} -> ${formatSize(r.fileSizeAfter)}\n`,
      );
    });

  vhd
    .command('resize')
    .description('grow a fixed or dynamic disk, or shrink a dynamic one over unallocated space')
    .argument('<file>', 'disk to resize')
    .requiredOption('--size <size>', 'new virtual size, e.g. 20G')
    .option('--exact-size', 'keep the size exactly instead of rounding up to a CHS geometry')
    .action(async (file: string, opts: { size: string; exactSize?: boolean }) => {
      const size = sizeOption(opts.size, '--size')!;
      const r = await resizeVhd(file, size, { provider, exactSize: opts.exactSize ?? false });
      io.stdout(
        `resized ${file}: ${formatSize(r.oldSize)} -> ${formatSize(r.newSize)} (${r.newSize} bytes)\n`,
      );
    });

  return vhd;
}

/**
 * Runs a commander program to completion and returns the process exit code: 0 on
 * success, 2 for a bad command line, 1 for a failed operation. Output goes to `io`.
 */
export async function runProgram(program: Command, argv: string[], io: CliIo = processIo): Promise<number> {
  const configure = (cmd: Command): void => {
    cmd.exitOverride();
    cmd.configureOutput({ writeOut: io.stdout, writeErr: io.stderr });
    cmd.commands.forEach(configure);
  };
  configure(program);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // commander has already printed its message (or the help) through writeErr/writeOut.
      return err.exitCode === 0 ? 0 : 2;
    }
    if (err instanceof ExitCode) return err.code;
    if (err instanceof UsageError) {
      io.stderr(`error: ${err.message}\n`);
      return 2;
    }
    if (err instanceof VhdArgumentError) {
      io.stderr(`error: ${asUsage(err).message}\n`);
      return 2;
    }
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'EACCES' || code === 'EISDIR') {
      const e = err as NodeJS.ErrnoException;
      io.stderr(`error: ${e.path ?? 'file'}: ${code === 'ENOENT' ? 'no such file' : e.message}\n`);
      return 1;
    }
    if (err instanceof EndpointError) {
      io.stderr(`error: ${err.message}\n`);
      return 2;
    }
    if (err instanceof HyperfarmError || err instanceof OperationFailedError) {
      io.stderr(`error: ${err.message}\n`);
      if (err.code === status.UNIMPLEMENTED) io.stderr('error: this farm does not offer that yet\n');
      if (err instanceof HyperfarmError && err.extra.outcomeUnknown)
        io.stderr('error: the change may or may not have happened: check before doing it again\n');
      if (
        err instanceof HyperfarmError &&
        (program.opts().verbose ||
          process.argv.includes('--verbose') ||
          argv.includes('-v') ||
          argv.includes('--verbose'))
      )
        io.stderr(
          `error: ${JSON.stringify({ method: err.extra.method, endpoint: err.extra.endpoint, attempts: err.extra.attempts, field: err.extra.field, leader: err.extra.leader })}\n`,
        );
      return 1;
    }
    if (isServiceError(err)) {
      io.stderr(`error: ${status[err.code]}: ${err.details}\n`);
      return 1;
    }
    io.stderr(`error: ${(err as Error).message}\n`);
    return 1;
  }
}

/** `hyperfarm vhd <argv...>` on its own, for tests and embedding. */
export function runVhd(argv: string[], io: CliIo = processIo): Promise<number> {
  const program = new Command('hyperfarm').addCommand(vhdCommand(io));
  return runProgram(program, ['vhd', ...argv], io);
}

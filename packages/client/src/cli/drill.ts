import { existsSync, readFileSync } from 'node:fs';
import { Command } from 'commander';
import {
  DRILL_SCHEMA,
  DrillFileError,
  loadDrill,
  runDrillFile,
  summary,
  type DrillOutcome,
  type RunSimDrill,
} from '../drills/index.js';
import { ExitCode, UsageError, type CliIo } from './vhd.js';

const read = (file: string) => {
  if (!existsSync(file)) throw new UsageError(`${file}: no such file`);
  return readFileSync(file, 'utf8');
};

/**
 * The farm simulator runs drills for `--sim`. It depends on this package (the drill format,
 * verdicts and report live here), so this package cannot depend on it back without a cycle:
 * it is loaded by name at run time, from the workspace that has both.
 */
const SIM_PACKAGE = '@hyperfarm/sim';

async function loadSimRunner(): Promise<RunSimDrill> {
  let mod: { runSimDrillFile?: RunSimDrill };
  try {
    mod = (await import(SIM_PACKAGE)) as typeof mod;
  } catch (err) {
    throw new Error(
      `--sim needs the farm simulator (${SIM_PACKAGE}, in the hyperfarm repository; npm run build): ${(err as Error).message}`,
    );
  }
  if (!mod.runSimDrillFile) throw new Error(`${SIM_PACKAGE} has no drill runner (runSimDrillFile)`);
  return mod.runSimDrillFile;
}

const seedOf = (v: string) => {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0)
    throw new UsageError(`--seed: ${JSON.stringify(v)} is not a whole number`);
  return n;
};

/** `hyperfarm drill validate|run|schema`: failure rehearsals from YAML files (docs/drills.md). */
export function drillCommand(io: CliIo): Command {
  const drill = new Command('drill').description(
    'rehearse failures: play a drill file on a farm and judge it',
  );
  drill.addCommand(
    new Command('validate')
      .description('check drill files against the format, with the line and column of each error')
      .argument('<file...>', 'drill files (YAML)')
      .action((files: string[]) => {
        let bad = 0;
        for (const file of files) {
          try {
            const plan = loadDrill(read(file), file);
            io.stdout(`${file}: ok (${plan.steps.length} steps, ${plan.expectations.length} expectations)\n`);
          } catch (err) {
            if (!(err instanceof DrillFileError)) throw err;
            bad++;
            io.stderr(`${err.message}\n`);
          }
        }
        if (bad) throw new ExitCode(2);
      }),
  );
  drill.addCommand(
    new Command('run')
      .description(
        'start a farm (or --attach to one), play the timeline, check the expectations, write a report',
      )
      .argument('<file>', 'a drill file (YAML)')
      .option('--quick', "the drill's quick scale (its `quick:` part), as CI runs it")
      .option('--attach [dir]', 'use the farm `npm start` runs from this data folder', false)
      .option('--out <dir>', 'where report.json and report.html go (default .hyperfarm/drills/<name>)')
      .option('--keep', "keep the drill's farm folder (logs, data) even when it passes")
      .option(
        '--netns',
        'root only: each process in its own network namespace; partitions take links down for real',
      )
      .option('--sim', 'play it in the farm simulator, on a virtual clock, instead of on real processes')
      .option('--seed <n>', "the simulator's seed (with --sim; default 1): the same seed, the same run")
      .action(
        async (
          file: string,
          opts: {
            quick?: boolean;
            attach: string | boolean;
            out?: string;
            keep?: boolean;
            netns?: boolean;
            sim?: boolean;
            seed?: string;
          },
        ) => {
          const text = read(file);
          try {
            loadDrill(text, file, { quick: opts.quick });
          } catch (err) {
            if (!(err instanceof DrillFileError)) throw err;
            io.stderr(`${err.message}\n`);
            throw new ExitCode(2);
          }
          const attach = opts.attach === true ? '.hyperfarm' : opts.attach || undefined;
          if (opts.seed !== undefined && !opts.sim) throw new UsageError('--seed: only with --sim');
          if (opts.sim && (attach || opts.netns || opts.keep))
            throw new UsageError(
              '--sim: the simulator runs its own farm: not with --attach, --netns or --keep',
            );
          const seed = opts.seed === undefined ? undefined : seedOf(opts.seed);
          const onStep = (line: string) => io.stderr(`${line}\n`);
          const outcome: DrillOutcome = opts.sim
            ? await (
                await loadSimRunner()
              )(file, {
                quick: opts.quick,
                ...(opts.out ? { out: opts.out } : {}),
                ...(seed !== undefined ? { seed } : {}),
                onStep,
              })
            : await runDrillFile(file, {
                quick: opts.quick,
                ...(attach ? { attach } : {}),
                ...(opts.out ? { out: opts.out } : {}),
                keep: opts.keep,
                netns: opts.netns === true,
                onStep,
              });
          io.stdout(summary(outcome.report));
          const sim = outcome.report.simulation;
          if (sim)
            io.stdout(
              `replay: hyperfarm drill run ${file}${opts.quick ? ' --quick' : ''} --sim --seed ${sim.seed}\n`,
            );
          io.stdout(`report: ${outcome.html} (and ${outcome.json})\n`);
          if (outcome.farmDir) io.stdout(`the farm's logs: ${outcome.farmDir}\n`);
          if (!outcome.report.passed) throw new ExitCode(3);
        },
      ),
  );
  drill.addCommand(
    new Command('schema').description("print the drill format's JSON Schema").action(() => {
      io.stdout(`${JSON.stringify(DRILL_SCHEMA, null, 2)}\n`);
    }),
  );
  return drill;
}

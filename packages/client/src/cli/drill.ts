import { existsSync, readFileSync } from 'node:fs';
import { Command } from 'commander';
import { DRILL_SCHEMA, DrillFileError, loadDrill, runDrillFile, summary } from '../drills/index.js';
import { ExitCode, UsageError, type CliIo } from './vhd.js';

const read = (file: string) => {
  if (!existsSync(file)) throw new UsageError(`${file}: no such file`);
  return readFileSync(file, 'utf8');
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
      .action(
        async (
          file: string,
          opts: { quick?: boolean; attach: string | boolean; out?: string; keep?: boolean; netns?: boolean },
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
          const outcome = await runDrillFile(file, {
            quick: opts.quick,
            ...(attach ? { attach } : {}),
            ...(opts.out ? { out: opts.out } : {}),
            keep: opts.keep,
            netns: opts.netns === true,
            onStep: (line) => io.stderr(`${line}\n`),
          });
          io.stdout(summary(outcome.report));
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

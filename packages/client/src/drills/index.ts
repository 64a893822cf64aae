/** The drill runner: load a drill file, play it on a farm, judge it, write its report. */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { attachFarm, startOwnFarm, type DrillFarm } from './drill-farm.js';
import { loadDrill, type Plan } from './format.js';
import { buildReport, renderHtml, type DrillReport } from './report.js';
import { DrillRun } from './runner.js';
import { judge } from './verdict.js';

export { loadDrill, DrillFileError, compile, mergePatch, type Plan, type DrillError } from './format.js';
export { DRILL_SCHEMA } from './schema.js';
export {
  judge,
  runIntervals,
  twoHostViolations,
  availability,
  type Verdict,
  type RunInterval,
  type Availability,
} from './verdict.js';
export { buildReport, renderHtml, summary, type DrillReport } from './report.js';
export { EXECUTING, type Observation } from './observations.js';
export { ms } from './format.js';
export {
  describe as describeCondition,
  playTimeline,
  until,
  Writer,
  type FarmProbe,
  type RunClock,
} from './timeline.js';
export {
  createVmRequest,
  nlbClusterRequest,
  nlbMemberRequests,
  switchRequest,
  trafficRequest,
  trafficTotals,
  writerVmConfig,
} from './requests.js';
export type { Condition, DrillFile, HostRef, Step, StepKind } from './types.js';

export interface RunDrillOptions {
  quick?: boolean;
  /** Use the running farm whose farm.json is in this folder instead of starting one. */
  attach?: string;
  /** Where the report (and the drill's own farm) go; default .hyperfarm/drills/<name>. */
  out?: string;
  /** Keep the drill's own farm folder (logs, data) even when the drill passes. */
  keep?: boolean;
  /**
   * Root only: run the drill's own farm with each process in its own network namespace, so a
   * partition or an isolation takes links down for real (docs/drills.md).
   */
  netns?: boolean;
  onStep?: (line: string) => void;
}

/**
 * What `drill run --sim` asks of the farm simulator: @hyperfarm/sim's `runSimDrillFile`. The
 * simulator depends on this package (the drill format, verdicts and report are here), so this
 * package cannot depend on it back: the CLI loads it at run time (cli/drill.ts).
 */
export interface SimDrillOptions {
  quick?: boolean;
  /** Where the report goes; default .hyperfarm/drills/<name>-sim. */
  out?: string;
  /** The simulator's seed: the same seed plays the same run and writes the same report. */
  seed?: number;
  onStep?: (line: string) => void;
}
export type RunSimDrill = (file: string, opts?: SimDrillOptions) => Promise<DrillOutcome>;

export interface DrillOutcome {
  report: DrillReport;
  /** The report files' paths. */
  json: string;
  html: string;
  /** The drill's own farm's logs, when its folder is kept. */
  farmDir?: string;
}

export async function runDrillFile(file: string, opts: RunDrillOptions = {}): Promise<DrillOutcome> {
  const plan = loadDrill(readFileSync(file, 'utf8'), file, { quick: opts.quick });
  return runPlan(plan, file, opts);
}

export async function runPlan(plan: Plan, file: string, opts: RunDrillOptions = {}): Promise<DrillOutcome> {
  const out = resolve(opts.out ?? join('.hyperfarm', 'drills', plan.name));
  mkdirSync(out, { recursive: true });
  const startedAt = new Date();
  opts.onStep?.(
    opts.attach
      ? `attaching to the farm in ${opts.attach}`
      : `starting a farm of ${plan.daemons} daemons and ${plan.hosts.length} hosts in ${out}${opts.netns ? ', each process in its own network namespace' : ''}`,
  );
  if (opts.attach && opts.netns)
    throw new Error('--netns starts its own farm: it cannot be used with --attach');
  const farm: DrillFarm = opts.attach
    ? attachFarm(plan, opts.attach)
    : await startOwnFarm(plan, out, { netns: opts.netns === true });
  let report: DrillReport | undefined;
  try {
    const obs = await new DrillRun(plan, farm, { onStep: opts.onStep }).run();
    report = buildReport(plan, file, startedAt, obs, judge(plan, obs));
  } finally {
    // A failed drill's farm folder (logs, data) stays for a post-mortem.
    await farm.stop(Boolean(opts.keep) || !report?.passed);
  }
  const { json, html } = writeReport(report, out);
  const kept = (opts.keep || !report.passed) && !opts.attach;
  return { report, json, html, ...(kept ? { farmDir: farm.logs } : {}) };
}

/** Writes report.json and report.html in `out`; returns their paths. */
export function writeReport(report: DrillReport, out: string): { json: string; html: string } {
  mkdirSync(out, { recursive: true });
  const json = join(out, 'report.json');
  const html = join(out, 'report.html');
  writeFileSync(json, `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(html, renderHtml(report));
  return { json, html };
}

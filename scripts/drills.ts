/**
 * `npm run drills [-- --quick] [NAME...]`: every drill of drills/ (or those named), one after
 * another, each on its own farm; a summary at the end, exit 3 if any failed. See docs/drills.md.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DrillFileError, runDrillFile, summary } from '@hyperfarm/client';

const dir = fileURLToPath(new URL('../drills/', import.meta.url));
const args = process.argv.slice(2);
const quick = args.includes('--quick');
const names = args.filter((a) => !a.startsWith('--'));
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.yaml') && (names.length === 0 || names.includes(f.replace(/\.yaml$/, ''))))
  .sort();

const results: { drill: string; passed: boolean; seconds: number }[] = [];
for (const f of files) {
  const started = Date.now();
  process.stdout.write(`== ${f}${quick ? ' (quick)' : ''}\n`);
  try {
    const { report, html } = await runDrillFile(join(dir, f), {
      quick,
      onStep: (l) => process.stderr.write(`${l}\n`),
    });
    process.stdout.write(`${summary(report)}report: ${html}\n`);
    results.push({ drill: report.drill, passed: report.passed, seconds: (Date.now() - started) / 1000 });
  } catch (err) {
    process.stdout.write(`${err instanceof DrillFileError ? err.message : (err as Error).stack}\n`);
    results.push({ drill: f, passed: false, seconds: (Date.now() - started) / 1000 });
  }
}
process.stdout.write('\n');
for (const r of results)
  process.stdout.write(`${r.passed ? 'PASS' : 'FAIL'}  ${r.drill} (${r.seconds.toFixed(0)} s)\n`);
process.exitCode = results.every((r) => r.passed) ? 0 : 3;

/**
 * `npm run fuzz -- --seed N --count N [--only AgentService.UpdateVm]`: the long request fuzz
 * run (see docs/fuzzing.md). Exits 1 when a request fails a check, printing the seed, the
 * request and the answer.
 */
import { Command, InvalidArgumentError } from 'commander';
import { fuzz } from './fuzz.js';

const whole = (value: string) => {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError('expected a whole number');
  return n;
};

const opts = new Command('npm run fuzz --')
  .description('Fuzz every RPC of a fresh farm with requests drawn from the proto descriptors.')
  .option('--seed <n>', 'seed of the request sequence (default: random, printed)', whole)
  .option('--count <n>', 'requests to send', whole, 5_000)
  .option('--only <rpcs>', 'only RPCs whose name contains one of these, comma separated', (v) => v.split(','))
  .option('--verbose', 'print the answers per RPC at the end')
  .option('--keep', 'keep the sandbox (data folders, logs) even when every check passes')
  .showHelpAfterError()
  .parse()
  .opts<{ seed?: number; count: number; only?: string[]; keep?: boolean; verbose?: boolean }>();

const seed = opts.seed ?? Math.floor(Math.random() * 2 ** 31);
const say = (line: string) => process.stdout.write(`${line}\n`);
say(`fuzz: seed ${seed}, ${opts.count} requests${opts.only ? ` to ${opts.only.join(', ')}` : ''}`);
const started = Date.now();
const report = await fuzz({ seed, count: opts.count, only: opts.only, keep: opts.keep, log: say });
const seconds = (Date.now() - started) / 1000;
say(`fuzz: ${report.sent} requests in ${seconds.toFixed(1)} s; answers: ${JSON.stringify(report.codes)}`);
if (opts.verbose)
  for (const [rpc, codes] of Object.entries(report.byRpc).sort())
    say(`  ${rpc.padEnd(40)} ${JSON.stringify(codes)}`);
if (report.failures.length > 0) {
  say(`fuzz: ${report.failures.length} failures with seed ${seed}; logs and data kept in ${report.sandbox}`);
  say(
    `fuzz: rerun with: npm run fuzz -- --seed ${seed} --count ${opts.count}${opts.only ? ` --only ${opts.only.join(',')}` : ''}`,
  );
}
say(JSON.stringify({ seed, sent: report.sent, failures: report.failures.length, seconds }));
process.exit(report.failures.length > 0 ? 1 : 0);

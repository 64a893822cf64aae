/**
 * Where a process's CPU went, from a V8 .cpuprofile (`node --cpu-prof`, or a bench's `--profile
 * DIR`): self and inclusive time by function, the largest first.
 *
 *   node --import tsx scripts/bench/cpuprofile.ts FILE.cpuprofile [--window DIR/window.json] [--top 40]
 *
 * `--window` keeps the samples between two instants of the monotonic clock in µs
 * ({"fromUs", "toUs"}: what bench:placement --profile writes for its create phase), so a
 * farm's registration and idle time do not dilute the phase measured. `--per <n>` divides the
 * times by n and prints µs per unit (e.g. `--per 10000` for µs per VM created); `--match RE`
 * lists the callers and callees of the functions whose name matches.
 */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { Command } from 'commander';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  children?: number[];
}
interface Profile {
  nodes: Node[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface FunctionTime {
  name: string;
  selfUs: number;
  totalUs: number;
}

const frameName = (n: Node): string => {
  const f = n.callFrame;
  const fn = f.functionName || '(anonymous)';
  if (!f.url) return fn;
  // The package and file are enough to find it: node_modules/<pkg>/..., packages/<pkg>/...
  const url = f.url.replace(/^file:\/\//, '');
  const at = /(?:node_modules|packages)\/(.*)$/.exec(url)?.[1] ?? basename(url);
  return `${fn} ${at}:${f.lineNumber + 1}`;
};

/**
 * Self and inclusive time of each function (by name and place) over the samples taken in
 * [fromUs, toUs]. A sample's time is the delta to the next one (the interval it stands for).
 * Inclusive time counts a sample once per function even where the function recurses.
 */
export function functionTimes(
  p: Profile,
  fromUs = -Infinity,
  toUs = Infinity,
): { byFunction: FunctionTime[]; totalUs: number; parent: Map<number, number>; nodes: Map<number, Node> } {
  const nodes = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const selfByNode = new Map<number, number>();
  let t = p.startTime;
  let totalUs = 0;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i]!;
    const dt = p.timeDeltas[i + 1] ?? 0;
    if (t < fromUs || t > toUs) continue;
    selfByNode.set(p.samples[i]!, (selfByNode.get(p.samples[i]!) ?? 0) + dt);
    totalUs += dt;
  }
  const fns = new Map<string, FunctionTime>();
  const fn = (name: string) => {
    let f = fns.get(name);
    if (!f) fns.set(name, (f = { name, selfUs: 0, totalUs: 0 }));
    return f;
  };
  for (const [id, us] of selfByNode) {
    fn(frameName(nodes.get(id)!)).selfUs += us;
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const name = frameName(nodes.get(at)!);
      if (seen.has(name)) continue;
      seen.add(name);
      fn(name).totalUs += us;
    }
  }
  return { byFunction: [...fns.values()], totalUs, parent, nodes };
}

const isMain = process.argv[1] && import.meta.url.endsWith(basename(process.argv[1]));
if (isMain) {
  const cmd = new Command('cpuprofile')
    .argument('<file>', 'a .cpuprofile')
    .option('--window <file>', 'a JSON {"fromUs","toUs"}: only the samples between')
    .option('--top <n>', 'functions listed in each table', Number, 40)
    .option('--per <n>', 'print µs per unit (times divided by n)', Number, 0)
    .option('--match <re>', 'also list who calls, and what is called by, the functions matching')
    .parse();
  const o = cmd.opts<{ window?: string; top: number; per: number; match?: string }>();
  const p = JSON.parse(readFileSync(cmd.args[0]!, 'utf8')) as Profile;
  const w = o.window
    ? (JSON.parse(readFileSync(o.window, 'utf8')) as { fromUs: number; toUs: number })
    : undefined;
  const { byFunction, totalUs, parent, nodes } = functionTimes(p, w?.fromUs, w?.toUs);
  const idle = byFunction.find((f) => f.name === '(idle)')?.selfUs ?? 0;
  const fmt = (us: number) =>
    o.per > 0 ? `${(us / o.per).toFixed(1).padStart(8)} µs` : `${(us / 1000).toFixed(0).padStart(7)} ms`;
  const pct = (us: number) => `${((100 * us) / Math.max(1, totalUs - idle)).toFixed(1).padStart(5)}%`;
  process.stdout.write(
    `${cmd.args[0]}: ${(totalUs / 1e6).toFixed(2)} s sampled${w ? ' in the window' : ''}, ${((totalUs - idle) / 1e6).toFixed(2)} s busy (% of busy)\n`,
  );
  for (const [title, key] of [
    ['self', 'selfUs'],
    ['inclusive', 'totalUs'],
  ] as const) {
    process.stdout.write(`\n${title}:\n`);
    for (const f of [...byFunction].sort((a, b) => b[key] - a[key]).slice(0, o.top))
      process.stdout.write(`${fmt(f[key])} ${pct(f[key])}  ${f.name}\n`);
  }
  if (o.match) {
    // Callers and callees of the matching functions, by inclusive time of the edge.
    const re = new RegExp(o.match);
    const callers = new Map<string, number>();
    const callees = new Map<string, number>();
    let t = p.startTime;
    for (let i = 0; i < p.samples.length; i++) {
      t += p.timeDeltas[i]!;
      const dt = p.timeDeltas[i + 1] ?? 0;
      if (w && (t < w.fromUs || t > w.toUs)) continue;
      let child: string | undefined;
      for (let at: number | undefined = p.samples[i]; at !== undefined; at = parent.get(at)) {
        const name = frameName(nodes.get(at)!);
        if (re.test(name)) {
          const up = parent.get(at);
          const callerName = up === undefined ? '(root)' : frameName(nodes.get(up)!);
          callers.set(callerName, (callers.get(callerName) ?? 0) + dt);
          const calleeName = child ?? '(self)';
          callees.set(calleeName, (callees.get(calleeName) ?? 0) + dt);
          break;
        }
        child = name;
      }
    }
    for (const [title, m] of [
      ['callers', callers],
      ['callees', callees],
    ] as const) {
      process.stdout.write(`\n${title} of /${o.match}/ (outermost match):\n`);
      for (const [name, us] of [...m].sort((a, b) => b[1] - a[1]).slice(0, o.top))
        process.stdout.write(`${fmt(us)} ${pct(us)}  ${name}\n`);
    }
  }
}

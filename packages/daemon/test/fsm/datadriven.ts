import { readFileSync, writeFileSync } from 'node:fs';

/**
 * Scenario files in the shape of etcd's testdata (cockroachdb/datadriven): each case is a
 * directive line, optional input lines, a `----` line and the expected output, ended by a blank
 * line. Run with REWRITE=1 to write the actual outputs back, then read the diff: the expected
 * outputs are reviewed against the specification, never taken from the code on trust.
 */

export interface Case {
  line: number;
  directive: string;
  args: Map<string, string>;
  input: string[];
  expected: string;
}

export function parseCases(text: string): Case[] {
  const lines = text.split('\n');
  const cases: Case[] = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i]!;
    if (line.trim() === '' || line.startsWith('#')) {
      i++;
      continue;
    }
    const start = i + 1;
    const [directive, ...rest] = line.trim().split(/\s+/);
    const args = new Map<string, string>();
    for (const a of rest) {
      const eq = a.indexOf('=');
      args.set(eq < 0 ? a : a.slice(0, eq), eq < 0 ? '' : a.slice(eq + 1));
    }
    i++;
    const input: string[] = [];
    while (i < lines.length && lines[i] !== '----') input.push(lines[i++]!);
    if (i >= lines.length) throw new Error(`line ${start}: '${directive}' has no ---- separator`);
    i++;
    const out: string[] = [];
    while (i < lines.length && lines[i] !== '') out.push(lines[i++]!);
    cases.push({ line: start, directive: directive!, args, input, expected: out.join('\n') });
  }
  return cases;
}

/** Writes `actual` outputs in place of the expected ones, keeping everything else. */
export function rewrite(path: string, actuals: string[]): void {
  const lines = readFileSync(path, 'utf8').split('\n');
  const out: string[] = [];
  let i = 0;
  let n = 0;
  while (i < lines.length) {
    const line = lines[i]!;
    out.push(line);
    i++;
    if (line !== '----') continue;
    while (i < lines.length && lines[i] !== '') i++;
    const actual = actuals[n++] ?? '';
    if (actual !== '') out.push(...actual.split('\n'));
  }
  writeFileSync(path, out.join('\n'));
}

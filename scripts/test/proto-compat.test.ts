import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { PROTO_FILES } from '@hyperfarm/api';
import { protoShape, type ProtoShape } from './proto-shape.js';

const protoDir = fileURLToPath(new URL('../../proto', import.meta.url));
const baseline = JSON.parse(
  readFileSync(fileURLToPath(new URL('./proto-v1-baseline.json', import.meta.url)), 'utf8'),
) as ProtoShape;

/**
 * v1 only grows: every message field, enum value and method published (the baseline, recorded
 * from v1 as first released) keeps its name, number and type; none is removed or renumbered, so
 * no number is reused. New elements are free, and documented (proto-docs.test.ts).
 */
describe('the API contract only grows', () => {
  const now = protoShape(protoDir, PROTO_FILES);

  it('keeps every published field, enum value and method as it was', () => {
    const changed: string[] = [];
    for (const [kind, groups] of Object.entries(baseline) as [
      keyof ProtoShape,
      Record<string, Record<string, unknown>>,
    ][]) {
      for (const [name, members] of Object.entries(groups)) {
        const current = (now[kind] as Record<string, Record<string, unknown>>)[name];
        if (!current) {
          changed.push(`${kind} ${name} is gone`);
          continue;
        }
        for (const [member, was] of Object.entries(members)) {
          if (current[member] !== was)
            changed.push(`${name}.${member}: was ${String(was)}, now ${String(current[member] ?? 'gone')}`);
        }
      }
    }
    expect(changed, changed.join('\n')).to.deep.equal([]);
  });

  it('never gives a new field a number a message already used, nor a new enum value an old number', () => {
    const clashes: string[] = [];
    for (const [name, fields] of Object.entries(now.messages)) {
      const numbers = Object.entries(fields).map(([f, d]) => [f, d.split(' ')[0]!] as const);
      for (const [f, n] of numbers)
        if (numbers.some(([g, m]) => g !== f && m === n)) clashes.push(`${name}.${f} = ${n}`);
    }
    for (const [name, values] of Object.entries(now.enums)) {
      const old = baseline.enums[name] ?? {};
      for (const [v, n] of Object.entries(values)) {
        const owner = Object.entries(old).find(([, m]) => m === n)?.[0];
        if (owner !== undefined && owner !== v) clashes.push(`${name}.${v} = ${n} (was ${owner})`);
      }
    }
    expect(clashes, clashes.join('\n')).to.deep.equal([]);
  });

  it('uses no proto3 `optional` label (older protoc versions reject it)', () => {
    const found = PROTO_FILES.flatMap((f) =>
      readFileSync(join(protoDir, f), 'utf8')
        .split('\n')
        .map((line, i) => ({ line: line.replace(/\/\/.*$/, ''), at: `${f}:${i + 1}` }))
        .filter(({ line }) => /^\s*optional\s/.test(line))
        .map(({ at }) => at),
    );
    expect(found).to.deep.equal([]);
  });
});

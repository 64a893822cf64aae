import { expect } from 'chai';
import { readFileSync, readdirSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DRILL_SCHEMA, DrillFileError, loadDrill, mergePatch } from '../src/drills/index.js';
import { hyperfarmProgram, runProgram } from '../src/index.js';
import { daemonArgs } from '../src/drills/drill-farm.js';

const DRILLS = fileURLToPath(new URL('../../../drills/', import.meta.url));

function errorsOf(text: string, opts = {}): string[] {
  try {
    loadDrill(text, 'd.yaml', opts);
  } catch (err) {
    if (err instanceof DrillFileError) return err.errors.map((e) => `${e.line}:${e.column} ${e.message}`);
    throw err;
  }
  return [];
}

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const io = { stdout: (t: string) => (out += t), stderr: (t: string) => (err += t) };
  const code = await runProgram(hyperfarmProgram(io), args, io);
  return { code, out, err };
}

const GOOD = `name: ok
farm:
  daemons: 3
  hosts: 2
workload:
  vms:
    - { name: web, count: 2, ha: high }
timeline:
  - create:
  - label: crash
    kill-agent: { hostOf: web-1 }
  - wait: { vmsRunning: all, within: 30s }
expect:
  - vmsRunning: { within: 20s, after: crash }
`;

describe('drill files: the format and its errors', () => {
  it('accepts a drill and resolves it: hosts and VMs named, durations in ms, lines of steps', () => {
    const plan = loadDrill(GOOD, 'd.yaml');
    expect(plan.hosts.map((h) => h.name)).to.deep.equal(['host-1', 'host-2']);
    expect(plan.vms.map((v) => [v.name, v.ha])).to.deep.equal([
      ['web-1', 'high'],
      ['web-2', 'high'],
    ]);
    expect(plan.steps.map((s) => [s.kind, s.line, s.label])).to.deep.equal([
      ['create', 9, undefined],
      ['kill-agent', 10, 'crash'],
      ['wait', 12, undefined],
    ]);
    expect(plan.expectations[0]).to.include({ kind: 'vmsRunning', line: 14 });
  });

  it('reports a YAML syntax error with its line and column', () => {
    const errs = errorsOf('name: x\nfarm: { daemons: 3\ntimeline: []\n');
    expect(errs).to.have.length.greaterThan(0);
    expect(errs[0]).to.match(/^[23]:\d+ /);
  });

  it('reports every schema error at once, each at its line:column with the reason', () => {
    const text = [
      'name: Bad_Name', // 1
      'farm:', // 2
      '  daemons: 9', // 3
      '  hosts: 2', // 4
      '  colour: blue', // 5
      'workload:', // 6
      '  vms:', // 7
      '    - { name: web, memory: 12X }', // 8
      'timeline:', // 9
      '  - kil-agent: { host: host-1 }', // 10
      '  - kill-agent: { host: host-1 }', // 11
      '    start:', // 12
      '  - wait: { vmsRunning: all, within: 3 seconds }', // 13
      '  - kill-agent: { host: host-1, hostOf: web }', // 14
    ].join('\n');
    const errs = errorsOf(text);
    expect(errs).to.deep.equal([
      `1:7 "Bad_Name" is not a name of lowercase letters, digits and '-' (at most 41)`,
      '3:12 9: must be <= 7',
      "5:3 unknown field 'colour' (expected one of: daemons, hosts, capacity, timing, clusterStorage, switches)",
      '8:28 "12X" is not a size such as 256M or 4G',
      "10:5 unknown field 'kil-agent' (did you mean 'kill-agent'?)",
      '11:5 a step takes one of its kinds, not several: start and kill-agent',
      '13:38 "3 seconds" is not a duration: "500ms", "2s", "1.5m", or a number of milliseconds',
      '14:5 this takes one of host, hostOf, not several: host and hostOf',
    ]);
  });

  it('reports names the drill does not define, and labels no step has', () => {
    const text = GOOD.replace('hostOf: web-1', 'hostOf: web-9').replace('after: crash', 'after: crush');
    expect(errorsOf(text)).to.deep.equal([
      "11:27 no VM named 'web-9' (the drill has: web-1, web-2)",
      "14:39 no step is labelled 'crush' (labels: crash)",
    ]);
  });

  it('checks the --quick variant too, placing its errors in the quick part', () => {
    const text = `${GOOD}quick:\n  timeline:\n    - kill-agent: { host: host-7 }\n`;
    expect(errorsOf(text)).to.deep.equal([
      "14:39 with --quick: no step is labelled 'crash' (labels: none)",
      "17:27 with --quick: no host named 'host-7' (the drill has: host-1, host-2)",
    ]);
  });

  it('applies the quick part as a JSON Merge Patch (RFC 7386, appendix A)', () => {
    // The RFC's own examples.
    expect(mergePatch({ a: 'b' }, { a: 'c' })).to.deep.equal({ a: 'c' });
    expect(mergePatch({ a: 'b' }, { b: 'c' })).to.deep.equal({ a: 'b', b: 'c' });
    expect(mergePatch({ a: 'b' }, { a: null })).to.deep.equal({});
    expect(mergePatch({ a: 'b', b: 'c' }, { a: null })).to.deep.equal({ b: 'c' });
    expect(mergePatch({ a: ['b'] }, { a: 'c' })).to.deep.equal({ a: 'c' });
    expect(mergePatch({ a: 'c' }, { a: ['b'] })).to.deep.equal({ a: ['b'] });
    expect(mergePatch({ a: { b: 'c' } }, { a: { b: 'd', c: null } })).to.deep.equal({ a: { b: 'd' } });
    expect(mergePatch({ a: [{ b: 'c' }] }, { a: [1] })).to.deep.equal({ a: [1] });
    expect(mergePatch(['a', 'b'], ['c', 'd'])).to.deep.equal(['c', 'd']);
    expect(mergePatch({ a: 'b' }, ['c'])).to.deep.equal(['c']);
    expect(mergePatch({ a: 'foo' }, null)).to.equal(null);
    expect(mergePatch({ a: 'foo' }, 'bar')).to.equal('bar');
    expect(mergePatch({ e: null }, { a: 1 })).to.deep.equal({ e: null, a: 1 });
    expect(mergePatch([1, 2], { a: 'b', c: null })).to.deep.equal({ a: 'b' });
    expect(mergePatch({}, { a: { bb: { ccc: null } } })).to.deep.equal({ a: { bb: {} } });
    const plan = loadDrill(`${GOOD}quick:\n  farm: { hosts: 3 }\n`, 'd.yaml', { quick: true });
    expect(plan.hosts).to.have.length(3);
    expect(plan.daemons).to.equal(3);
  });

  it('`drill validate` prints every error as file:line:column and exits 2; a good file exits 0', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'drill-'));
    writeFileSync(join(dir, 'bad.yaml'), GOOD.replace('daemons: 3', 'daemons: three'));
    writeFileSync(join(dir, 'good.yaml'), GOOD);
    const bad = await cli(['drill', 'validate', join(dir, 'good.yaml'), join(dir, 'bad.yaml')]);
    expect(bad.code).to.equal(2);
    expect(bad.err).to.equal(`${join(dir, 'bad.yaml')}:3:12: "three": must be integer\n`);
    expect(bad.out).to.equal(`${join(dir, 'good.yaml')}: ok (3 steps, 1 expectations)\n`);
    expect((await cli(['drill', 'validate', join(dir, 'none.yaml')])).code).to.equal(2);
  });

  it('every shipped drill is valid, names its schema for editors, and drills/schema.json is the schema', async () => {
    const files = readdirSync(DRILLS).filter((f) => f.endsWith('.yaml'));
    expect(files.length).to.be.at.least(8);
    const r = await cli(['drill', 'validate', ...files.map((f) => join(DRILLS, f))]);
    expect(r.err).to.equal('');
    expect(r.code).to.equal(0);
    for (const f of files)
      expect(readFileSync(join(DRILLS, f), 'utf8').split('\n')[0]).to.equal(
        '# yaml-language-server: $schema=schema.json',
      );
    expect(JSON.parse(readFileSync(join(DRILLS, 'schema.json'), 'utf8'))).to.deep.equal(
      JSON.parse(JSON.stringify(DRILL_SCHEMA)),
    );
  });

  it("a drill's fast timing runs the daemons with Raft's fast profile too, so a leader's death does not outlast the 1 s leases", () => {
    const drill = (timing: string) =>
      loadDrill(
        `name: t\nfarm: { daemons: 3, hosts: 1, timing: ${timing} }\ntimeline: [{ hold: 1s }]\n`,
        't.yaml',
      );
    expect(daemonArgs(drill('fast'))).to.deep.equal(['--liveness-profile', 'fast', '--raft-profile', 'fast']);
    expect(daemonArgs(drill('default'))).to.deep.equal(['--liveness-profile', 'default']);
  });
});

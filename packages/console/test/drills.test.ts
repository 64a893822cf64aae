import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { drillTimeline } from '../src/drills.js';
import type { DrillReport } from '../src/wire.js';

/**
 * A drill report's timeline as the Drills view draws it, from the report of a real
 * `hyperfarm drill run drills/quick-migration.yaml --quick` (test/fixtures/drills).
 */
const report = JSON.parse(
  readFileSync(join(import.meta.dirname, 'fixtures/drills/quick-migration/report.json'), 'utf8'),
) as DrillReport;

describe('console: a drill report’s timeline', () => {
  const t = drillTimeline(report);

  it('draws each VM’s states and hosts as the daemons reported them, to the end of the run', () => {
    expect(t.endMs).to.equal(report.durationMs);
    const db = t.lanes.find((l) => l.vm === 'db')!;
    // The quick migration: saved on host-1, restored on host-2 (the report's 'vm' observations).
    expect(db.segments.map((s) => [s.from, s.to, s.state.replace('VM_STATE_', ''), s.host])).to.deep.equal([
      [3819, 3908, 'STARTING', 'host-1'],
      [3908, 6414, 'RUNNING', 'host-1'],
      [6414, 6780, 'SAVING', 'host-1'],
      [6780, 6788, 'SAVING', 'host-2'],
      [6788, 6858, 'OFF', 'host-2'],
      [6858, report.durationMs, 'RUNNING', 'host-2'],
    ]);
    // Lanes by name as a person sorts them: w-2 before w-10.
    const names = t.lanes.map((l) => l.vm);
    expect(names.indexOf('w-2')).to.be.below(names.indexOf('w-10'));
  });

  it('marks the steps with their labels and the leader', () => {
    expect(t.marks.find((m) => m.kind === 'step' && m.t === 6052)?.text).to.equal("migrate 'move'");
    expect(t.marks.filter((m) => m.kind === 'leader').map((m) => m.text)).to.deep.equal(['leader daemon-2']);
    expect(t.marks.filter((m) => m.kind === 'step')).to.have.length(report.steps.length);
  });
});

import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { parseCases, rewrite } from './datadriven.js';
import { FarmHarness } from './harness.js';

const dir = fileURLToPath(new URL('./testdata', import.meta.url));

/** The farm state machine, command by command, against reviewed golden outputs (testdata/). */
describe('the farm state machine (golden files)', () => {
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.txt'))) {
    it(file.replace(/\.txt$/, ''), () => {
      const path = join(dir, file);
      const cases = parseCases(readFileSync(path, 'utf8'));
      const harness = new FarmHarness();
      const actuals = cases.map((c) => harness.run(c));
      if (process.env.REWRITE) {
        rewrite(path, actuals);
        return;
      }
      cases.forEach((c, i) => {
        expect(actuals[i], `${file}:${c.line} ${c.directive}`).to.equal(c.expected);
      });
    });
  }
});

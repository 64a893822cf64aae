import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HyperfarmClient } from '../src/index.js';
import { ProcessFarm } from '../src/farm/process-farm.js';
import { agreedLeader, until } from './helpers.js';

const pkg = fileURLToPath(new URL('..', import.meta.url));
const DOC = join(pkg, '../../docs/client.md');

/** The TypeScript examples of docs/client.md, in order. */
const examples = [...readFileSync(DOC, 'utf8').matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!);

function runExample(file: string, endpoints: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', file], {
      env: { ...process.env, HYPERFARM_ENDPOINTS: endpoints.join(',') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.once('exit', (code) => resolve({ code, out }));
  });
}

describe('docs/client.md: every example runs against a real farm', function () {
  this.timeout(60_000);
  let farm: ProcessFarm;
  // Inside the package, so `@hyperfarm/client` resolves as it does for a user of the workspace.
  const dir = mkdtempSync(join(pkg, '.docs-run-'));

  before(async () => {
    farm = await ProcessFarm.start({ daemons: 3 });
    await agreedLeader(farm);
    await farm.startAgent('rack', 2);
    const c = new HyperfarmClient({ endpoints: farm.endpoints });
    await until('2 hosts Up', 30_000, async () => {
      const { hosts } = await c.call('listHosts', { state: 'HOST_STATE_UP' });
      return hosts.length === 2 ? true : undefined;
    });
    c.close();
  });

  after(async () => {
    rmSync(dir, { recursive: true, force: true });
    await farm?.stop();
  });

  it('has examples', () => expect(examples.length).to.be.at.least(4));

  examples.forEach((code, i) => {
    it(`example ${i + 1}: ${code.split('\n').find((l) => l.startsWith('const') || l.startsWith('for'))}`, async () => {
      const file = join(dir, `example-${i + 1}.ts`);
      writeFileSync(file, code);
      const r = await runExample(file, farm.endpoints);
      expect(r.code, r.out).to.equal(0);
      expect(r.out.trim(), 'it prints what it found').to.not.equal('');
    });
  });
});

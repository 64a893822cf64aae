import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VhdDisk } from '@hyperfarm/vhd';
import { runVhd } from '../src/index.js';

/** Runs `hyperfarm vhd ...` in-process with captured output. */
async function vhd(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runVhd(argv, { stdout: (t) => (out += t), stderr: (t) => (err += t) });
  return { code, out, err };
}

describe('hyperfarm vhd', () => {
  let dir: string;
  const file = (name: string) => join(dir, name);

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'hyperfarm-vhd-cli-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('new creates fixed, dynamic and differencing disks', async () => {
    let r = await vhd('new', '--type', 'fixed', '--size', '1M', '--exact-size', file('f.vhd'));
    expect(r).to.deep.include({ code: 0, err: '' });
    expect(r.out).to.equal(`created fixed disk ${file('f.vhd')}: virtual size 1 MiB (1048576 bytes)\n`);
    r = await vhd('new', '--type', 'dynamic', '--size', '10M', '--block-size', '512K', file('d.vhd'));
    expect(r.code).to.equal(0);
    expect(r.out).to.match(/virtual size 10.03 MiB \(10514432 bytes\)/);
    r = await vhd('new', '--type', 'differencing', '--parent', file('d.vhd'), file('c.vhd'));
    expect(r.code).to.equal(0);
    expect(r.out).to.match(/parent .*d\.vhd\n$/);
    const c = await VhdDisk.open(file('c.vhd'), { readOnly: true });
    expect(c.type).to.equal('differencing');
    expect(c.blockSize).to.equal(512 * 1024);
    await c.close();
  });

  it('usage errors name the argument and exit 2', async () => {
    const cases: [string[], RegExp][] = [
      [['new', '--type', 'fixed', '--size', 'ten', file('x.vhd')], /^error: --size: "ten" is not a size/],
      [['new', '--type', 'fixed', file('x.vhd')], /^error: --size: is required for a fixed disk/],
      [
        ['new', '--type', 'floppy', '--size', '1M', file('x.vhd')],
        /--type <type>' argument 'floppy' is invalid/,
      ],
      [['new', '--size', '1M', file('x.vhd')], /required option '--type <type>' not specified/],
      [['new', '--type', 'differencing', file('x.vhd')], /^error: --parent: is required/],
      [
        ['new', '--type', 'dynamic', '--size', '1M', '--block-size', '3000', file('x.vhd')],
        /^error: --block-size: must be a power of two/,
      ],
      [['info'], /missing required argument 'file'/],
      [['info', '-o', 'xml', file('x.vhd')], /'xml' is invalid/],
      [['frobnicate'], /unknown command 'frobnicate'/],
    ];
    for (const [argv, re] of cases) {
      const r = await vhd(...argv);
      expect(r.code, argv.join(' ')).to.equal(2);
      expect(r.err, argv.join(' ')).to.match(re);
    }
    expect(existsSync(file('x.vhd'))).to.equal(false);
  });

  it('failed operations exit 1 with the reason', async () => {
    let r = await vhd('info', file('missing.vhd'));
    expect(r).to.deep.include({ code: 1, err: `error: ${file('missing.vhd')}: no such file\n` });
    await vhd('new', '--type', 'dynamic', '--size', '1M', file('d.vhd'));
    r = await vhd('new', '--type', 'dynamic', '--size', '1M', file('d.vhd'));
    expect(r.code).to.equal(1);
    expect(r.err).to.match(/already exists/);
    r = await vhd('merge', file('d.vhd'));
    expect(r.code).to.equal(1);
    expect(r.err).to.match(/only differencing disks merge/);
  });

  it('info shows type, sizes and the parent chain, as text or JSON', async () => {
    await vhd('new', '--type', 'dynamic', '--size', '8M', '--exact-size', file('base.vhd'));
    await vhd('new', '--type', 'differencing', '--parent', file('base.vhd'), file('s1.vhd'));
    await vhd('new', '--type', 'differencing', '--parent', file('s1.vhd'), file('s2.vhd'));
    const d = await VhdDisk.open(file('s2.vhd'));
    await d.write(0, Buffer.alloc(4096, 1));
    await d.close();
    const text = await vhd('info', file('s2.vhd'));
    expect(text.code).to.equal(0);
    expect(text.out).to.match(/type: +differencing/);
    expect(text.out).to.match(/virtual size: +8 MiB \(8388608 bytes\)/);
    expect(text.out).to.match(/allocated size: +2 MiB/);
    expect(text.out).to.contain(`parent chain:\n  ${file('s1.vhd')} (differencing,`);
    expect(text.out).to.contain(`  ${file('base.vhd')} (dynamic,`);
    const json = await vhd('info', file('s2.vhd'), '-o', 'json');
    const info = JSON.parse(json.out);
    expect(info).to.deep.include({ type: 'differencing', virtualSize: 8388608, allocatedSize: 2097152 });
    expect(info.parentChain).to.deep.equal([file('s1.vhd'), file('base.vhd')]);
    expect(info.parents.map((p: { type: string }) => p.type)).to.deep.equal(['differencing', 'dynamic']);
  });

  it('check passes a good disk and lists each problem of a bad one, exiting 1', async () => {
    await vhd('new', '--type', 'dynamic', '--size', '4M', file('d.vhd'));
    let r = await vhd('check', file('d.vhd'));
    expect(r).to.deep.include({ code: 0, out: `${file('d.vhd')}: no problems found\n` });
    const bytes = readFileSync(file('d.vhd'));
    bytes[bytes.length - 512 + 40]! ^= 1; // end footer checksum breaks; the copy survives
    bytes[512 + 40]! ^= 1; // dynamic header checksum breaks
    writeFileSync(file('d.vhd'), bytes);
    r = await vhd('check', file('d.vhd'));
    expect(r.code).to.equal(1);
    const lines = r.out.trim().split('\n');
    expect(lines[0]).to.match(
      /^warning: footer at offset \d+: checksum mismatch.*using the footer copy at offset 0$/,
    );
    expect(lines[1]).to.match(/^error: dynamic header at offset 512: checksum mismatch/);
    expect(lines[2]).to.equal(`${file('d.vhd')}: 2 problems found`);
  });

  it('merge folds a child into its parent; compact shrinks the file', async () => {
    await vhd('new', '--type', 'dynamic', '--size', '8M', '--exact-size', file('base.vhd'));
    await vhd('new', '--type', 'differencing', '--parent', file('base.vhd'), file('child.vhd'));
    const c = await VhdDisk.open(file('child.vhd'));
    await c.write(3 * 1024 * 1024, Buffer.alloc(1024, 7));
    await c.write(0, Buffer.alloc(2 * 1024 * 1024)); // a zero block compact will drop
    await c.close();
    let r = await vhd('merge', file('child.vhd'));
    expect(r.code).to.equal(0);
    expect(r.out).to.equal(`merged ${file('child.vhd')} into ${file('base.vhd')}: 2 blocks, 2.00 MiB\n`);
    expect(existsSync(file('child.vhd'))).to.equal(false);
    r = await vhd('compact', file('base.vhd'));
    expect(r.code).to.equal(0);
    expect(r.out).to.match(/: 2 -> 1 blocks, /);
    const b = await VhdDisk.open(file('base.vhd'), { readOnly: true });
    expect((await b.read(3 * 1024 * 1024, 1024)).every((x) => x === 7)).to.equal(true);
    await b.close();
  });

  it('merge --into child folds the parent into FILE, re-links FILE and shows progress on a terminal', async () => {
    const MiB = 1024 * 1024;
    await vhd('new', '--type', 'dynamic', '--size', '8M', '--exact-size', file('base.vhd'));
    await vhd('new', '--type', 'differencing', '--parent', file('base.vhd'), file('snap.vhd'));
    await vhd('new', '--type', 'differencing', '--parent', file('snap.vhd'), file('now.vhd'));
    const write = async (path: string, offset: number, length: number, value: number) => {
      const d = await VhdDisk.open(file(path));
      await d.write(offset, Buffer.alloc(length, value));
      await d.close();
    };
    await write('base.vhd', 0, 8 * MiB, 1);
    await write('snap.vhd', 1 * MiB, 4 * MiB, 2); // three 2 MiB blocks of the grid
    await write('now.vhd', 2 * MiB, 1 * MiB, 3);
    let out = '';
    let err = '';
    const code = await runVhd(['merge', '--into', 'child', file('now.vhd')], {
      stdout: (t) => (out += t),
      stderr: (t) => (err += t),
      progress: true,
    });
    expect(code, err).to.equal(0);
    expect(out).to.equal(
      `merged ${file('snap.vhd')} into ${file('now.vhd')}: 3 blocks, 3 MiB; its parent is now ${file('base.vhd')}\n`,
    );
    const lines = err.split('\r').map((l) => l.trimEnd());
    expect(lines).to.deep.equal([
      '',
      'merging into the child: 0/3 blocks (0%), 0 B of 4 MiB',
      'merging into the child: 1/3 blocks (25%), 1 MiB of 4 MiB',
      'merging into the child: 2/3 blocks (75%), 3 MiB of 4 MiB',
      'merging into the child: 3/3 blocks (100%), 4 MiB of 4 MiB',
      'merging into the child: re-linking',
      'merging into the child: done',
    ]);
    expect(existsSync(file('snap.vhd'))).to.equal(false);
    expect(existsSync(`${file('now.vhd')}.merge-state`)).to.equal(false);
    const d = await VhdDisk.open(file('now.vhd'), { readOnly: true });
    const all = await d.read(0, 8 * MiB);
    await d.close();
    const expected = Buffer.alloc(8 * MiB, 1);
    expected.fill(2, 1 * MiB, 5 * MiB);
    expected.fill(3, 2 * MiB, 3 * MiB);
    expect(all.equals(expected)).to.equal(true);
    // Without a terminal: no progress lines. A dynamic disk has no parent to merge.
    const r = await vhd('merge', '--into', 'child', file('now.vhd'));
    expect(r.code).to.equal(0);
    expect(r.err).to.equal('');
    expect(r.out).to.match(/into .*now\.vhd: 4 blocks, 4 MiB; it is now a dynamic disk\n$/);
    expect((await vhd('merge', '--into', 'sideways', file('now.vhd'))).code).to.equal(2);
    expect((await vhd('merge', '--into', 'child', '--keep-child', file('now.vhd'))).err).to.equal(
      'error: --keep-child: only with --into parent\n',
    );
  });

  it('the built hyperfarm binary runs the same commands and exit codes', function () {
    const here = dirname(fileURLToPath(import.meta.url));
    const bin = join(here, '..', 'dist', 'bin', 'hyperfarm.js');
    if (!existsSync(bin)) {
      console.log('    dist/bin/hyperfarm.js not built (npx tsc -b packages/client): skipping');
      this.skip();
    }
    const run = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });
    let r = run('vhd', 'new', '--type', 'dynamic', '--size', '1M', file('d.vhd'));
    expect(r.status, r.stderr).to.equal(0);
    r = run('vhd', 'info', '-o', 'json', file('d.vhd'));
    expect(JSON.parse(r.stdout).type).to.equal('dynamic');
    r = run('vhd', 'new', '--type', 'fixed', file('x.vhd'));
    expect(r.status).to.equal(2);
    expect(r.stderr).to.match(/--size: is required/);
    r = run('vhd', 'check', file('nope.vhd'));
    expect(r.status).to.equal(1);
  });
});

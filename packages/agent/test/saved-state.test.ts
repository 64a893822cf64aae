import { expect } from 'chai';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GuestMemory, StateHasher, vmSeedOf } from '../src/engine/memory.js';
import { readSavedState, writeSavedState } from '../src/edge/saved-state.js';
import { bareDeviceState } from './helpers.js';

const DEVICE = bareDeviceState();

/** Page contents version 1, as specified then: xorshift32 (13, 17, 5) from the mixed seed. */
function v1Content(seed: number, page: number, version: number): Buffer {
  const out = Buffer.alloc(4096);
  let x = ((seed ^ Math.imul(page + 1, 0x9e3779b1) ^ Math.imul(version, 0x85ebca6b)) >>> 0) as number;
  x = Math.imul(x ^ (x >>> 16), 0x7feb352d) >>> 0;
  if (x === 0) x = 0x1234567;
  for (let i = 0; i < 1024; i++) {
    x = (x ^ (x << 13)) >>> 0;
    x = (x ^ (x >>> 17)) >>> 0;
    x = (x ^ (x << 5)) >>> 0;
    out.writeUInt32LE(x, i * 4);
  }
  return out;
}

/** A saved-state file as agents wrote it before page contents version 2 ("HFSAVE01"). */
function v1File(vmId: string, totalPages: number, pages: [number, number][], content = v1Content): Buffer {
  const seed = vmSeedOf(vmId);
  const head = Buffer.alloc(16);
  head.write('HFSAVE01', 0, 'ascii');
  head.writeUInt32BE(totalPages, 8);
  head.writeUInt32BE(DEVICE.length, 12);
  const h = new StateHasher(seed, totalPages);
  const records = pages.map(([page, version]) => {
    h.addPage(page, version);
    const r = Buffer.alloc(8);
    r.writeUInt32BE(page, 0);
    r.writeUInt32BE(version, 4);
    return Buffer.concat([r, content(seed, page, version)]);
  });
  const tail = Buffer.alloc(36);
  tail.writeUInt32BE(0xffffffff, 0);
  Buffer.from(h.finish(DEVICE), 'hex').copy(tail, 4);
  return Buffer.concat([head, DEVICE, ...records, tail]);
}

describe('saved-state files', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'hf-saved-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('reads a file written before page contents version 2, checking it against version 1', async () => {
    const path = join(dir, 'old.save');
    writeFileSync(
      path,
      v1File('vm-old', 64, [
        [1, 3],
        [7, 1],
        [63, 2],
      ]),
    );
    const { memory, sha256 } = await readSavedState(path, 'vm-old');
    expect([1, 7, 63, 2].map((p) => memory.versionOf(p))).to.deep.equal([3, 1, 2, 0]);
    expect(sha256).to.equal(memory.stateHash(DEVICE));
    // Version 2 contents under the version 1 magic are refused.
    const wrong = join(dir, 'wrong.save');
    writeFileSync(
      wrong,
      v1File('vm-old', 64, [[1, 3]], () => Buffer.alloc(4096, 1)),
    );
    const err = await readSavedState(wrong, 'vm-old').catch((e: unknown) => e);
    expect((err as Error).message).to.match(/page 1 does not hold version 3's content/);
  });

  it('writes version 2 files and reads them back', async () => {
    const memory = new GuestMemory('vm-new', 64);
    for (const p of [0, 5, 5, 40]) memory.write(p);
    const path = join(dir, 'new.save');
    const saved = await writeSavedState(path, memory, DEVICE);
    const back = await readSavedState(path, 'vm-new');
    expect(back.sha256).to.equal(saved.sha256);
    expect(back.memory.versionOf(5)).to.equal(2);
  });
});

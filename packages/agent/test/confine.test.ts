import { strict as assert } from 'node:assert';
import { mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { confine } from '../src/edge/confine.js';

/**
 * The confinement rule (docs: every file the agent writes goes through it): a path is judged by
 * where it really leads once `..` and every symbolic link of its existing part are followed.
 */
describe('confine', function () {
  let dir: string;
  let root: string;
  let outside: string;
  const refused = (path: string) => assert.throws(() => confine([root], path, 'path'), /outside the folders/);

  beforeEach(() => {
    // Real paths, so that a tmpdir behind a link does not blur what is compared.
    dir = realpathSync(mkdtempSync(join(tmpdir(), 'hf-confine-')));
    root = join(dir, 'vms');
    outside = join(dir, 'outside');
    mkdirSync(root);
    mkdirSync(outside);
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('a folder not made yet, and missing parts below it, are inside: the path is returned as resolved', () => {
    assert.equal(confine([root], 'vm-1', 'vm_id'), join(root, 'vm-1'));
    assert.equal(confine([root], 'vm-1/disks/a.vhd', 'path'), join(root, 'vm-1', 'disks', 'a.vhd'));
  });

  it('an existing folder, or a missing file in it, is inside', () => {
    mkdirSync(join(root, 'vm-2'));
    assert.equal(confine([root], 'vm-2', 'vm_id'), join(root, 'vm-2'));
    assert.equal(confine([root], 'vm-2/a.vhd', 'path'), join(root, 'vm-2', 'a.vhd'));
  });

  it('the root itself, and paths that climb out with .., are refused', () => {
    refused('.');
    refused('..');
    refused('vm-1/../../outside/x');
  });

  it('a link inside that leads outside is refused, with or without missing parts after it', () => {
    symlinkSync(outside, join(root, 'escape'));
    refused('escape');
    refused('escape/new/disk.vhd');
  });

  it('a link inside that leads inside is followed and accepted', () => {
    mkdirSync(join(root, 'real'));
    symlinkSync(join(root, 'real'), join(root, 'alias'));
    assert.equal(confine([root], 'alias/disk.vhd', 'path'), join(root, 'alias', 'disk.vhd'));
  });

  it('a root reached through a link is judged by its real place', () => {
    symlinkSync(root, join(dir, 'vms-link'));
    assert.equal(confine([join(dir, 'vms-link')], 'vm-3', 'vm_id'), join(dir, 'vms-link', 'vm-3'));
    symlinkSync(outside, join(root, 'out'));
    assert.throws(() => confine([join(dir, 'vms-link')], 'out/x', 'path'), /outside the folders/);
  });

  it('a dangling link is judged as the name it is (a missing part), and a path through a file as missing below it', () => {
    symlinkSync(join(outside, 'nowhere'), join(root, 'dangling'));
    assert.equal(confine([root], 'dangling', 'path'), join(root, 'dangling'));
    writeFileSync(join(root, 'file'), '');
    assert.equal(confine([root], 'file/below', 'path'), join(root, 'file', 'below'));
  });

  it('an absolute path is accepted only inside one of the roots', () => {
    assert.equal(confine([root, outside], join(outside, 'x.vhd'), 'path'), join(outside, 'x.vhd'));
    assert.throws(() => confine([root], join(outside, 'x.vhd'), 'path'), /outside the folders/);
  });

  it('each root is judged by its own real place, however its path is written and wherever the walk stopped', () => {
    // A check remembers the real paths it found: a root must get its own, keyed on where it leads.
    mkdirSync(join(root, 'vm-4'));
    symlinkSync(root, join(dir, 'vms-link'));
    const messy = join(dir, 'vms', '..', 'vms') + '/';
    assert.equal(confine([messy], 'vm-5', 'vm_id'), join(root, 'vm-5'));
    assert.equal(confine([join(dir, 'vms-link'), root], join(root, 'vm-5'), 'vm_id'), join(root, 'vm-5'));
    assert.equal(
      confine([join(root, 'vm-4'), outside], join(outside, 'x.vhd'), 'path'),
      join(outside, 'x.vhd'),
    );
    // The walk stops at vm-4, a root's own folder: the root itself is never inside.
    assert.throws(() => confine([join(root, 'vm-4')], join(root, 'vm-4'), 'path'), /outside the folders/);
    // The walk stops at a link to outside: a root beside it is not where the link leads.
    symlinkSync(outside, join(root, 'vm-4', 'out'));
    assert.throws(() => confine([join(root, 'vm-4')], 'out/new/x.vhd', 'path'), /outside the folders/);
    assert.equal(
      confine([join(root, 'vm-4'), outside], 'out/new/x.vhd', 'path'),
      join(root, 'vm-4', 'out', 'new', 'x.vhd'),
    );
  });
});

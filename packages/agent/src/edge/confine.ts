import { realpathSync, statSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { invalidArgument } from '@hyperfarm/api';

/** Linux's limits: longer paths or names fail with ENAMETOOLONG. */
const MAX_PATH = 4096;
const MAX_NAME = 255;

/**
 * The real path `path` names once every symbolic link in the part that exists is followed:
 * a path can only be judged after `..` and links are resolved, not by its text. The C library's
 * realpath (`.native`) gives the same answer as Node's own, which lstats each component from JS,
 * and a missing part is stepped over on stat's answer rather than a thrown error's (its message
 * and stack): 70 to 80 µs of CPU for a new VM's folder before, about 35 now, on every VM create.
 */
function realPath(path: string, known: Map<string, string>): string {
  const missing: string[] = [];
  let at = resolve(path);
  for (;;) {
    const seen = known.get(at);
    if (seen !== undefined) return join(seen, ...missing.reverse());
    if (exists(at)) {
      try {
        const real = realpathSync.native(at);
        known.set(at, real);
        return join(real, ...missing.reverse());
      } catch (err) {
        // Removed between the two calls: judged as a missing part.
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'ENOENT' && code !== 'ENOTDIR') throw err;
      }
    }
    const parent = dirname(at);
    if (parent === at) return resolve(path);
    missing.push(basename(at));
    at = parent;
  }
}

/** Whether `at` names something, links followed; an error other than a missing part is thrown. */
function exists(at: string): boolean {
  try {
    return statSync(at, { throwIfNoEntry: false }) !== undefined;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') return false;
    throw err;
  }
}

/** Refuses text no file system call could take: NUL bytes, or names too long for Linux. */
function checkPathText(path: string, field: string): void {
  if (path === '') throw invalidArgument(field, 'must name a path');
  if (path.includes('\0')) throw invalidArgument(field, 'must not contain a NUL byte');
  if (Buffer.byteLength(path) > MAX_PATH) throw invalidArgument(field, `longer than ${MAX_PATH} bytes`);
  if (path.split('/').some((part) => Buffer.byteLength(part) > MAX_NAME))
    throw invalidArgument(field, `has a name longer than ${MAX_NAME} bytes`);
}

/** Whether `path` (real) is `root` (real) or inside it. */
function within(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}

/**
 * The one confinement check: resolves `path` (relative to the first of `roots`, or absolute) to
 * its real location, following `..` and symbolic links, and returns it (resolved, links kept)
 * only if that lies strictly inside one of `roots`. Anything else is refused with
 * INVALID_ARGUMENT naming `field`. Every file the agent writes or removes goes through here.
 */
export function confine(roots: readonly string[], path: string, field: string): string {
  checkPathText(path, field);
  const resolved = resolve(roots[0]!, path);
  // The real paths found in this one check, by resolved path: the walk up from a new VM's folder
  // stops at its root, whose real path the roots' loop would otherwise find again (a stat and a
  // realpath, about 40% of the check's syscalls). One instant's answers are compared either way.
  const known = new Map<string, string>();
  const real = realPath(resolved, known);
  for (const root of roots) {
    const r = realPath(root, known);
    if (real !== r && within(r, real)) return resolved;
  }
  throw invalidArgument(field, `${isAbsolute(path) ? 'is' : 'leads'} outside the folders this agent may use`);
}

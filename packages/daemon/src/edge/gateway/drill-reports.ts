import { ApiError, invalidArgument, status } from '@hyperfarm/api';
import type { Dirent } from 'node:fs';
import { lstat, readdir, readFile, realpath } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve, sep } from 'node:path';

/**
 * The drill reports a console shows (docs/console.md, Drills): the report.json files that
 * `hyperfarm drill run` writes, one folder per drill, under one configured folder. A browser
 * names a report by its folder's path relative to that folder; nothing outside it is ever read:
 * the path is checked word by word, then the real file (symbolic links resolved) must still lie
 * inside the real folder.
 */

/** A report as listed: enough for a table, without the observations. */
export interface DrillReportEntry {
  /** The report's folder relative to the reports folder, with "/": how `drill` names it. */
  path: string;
  drill: string;
  passed: boolean;
  quick: boolean;
  startedAt: string;
  durationMs: number;
  /** Expectations that held and that failed. */
  held: number;
  failed: number;
  /** Set when report.json is there but is not a drill report; the other fields are then empty. */
  error?: string;
}

/** Folders below the reports folder searched for report.json (`drill run` writes NAME/). */
const MAX_DEPTH = 3;
const MAX_REPORTS = 500;
/** A report holds every observation of its run; larger than this is not a drill's report. */
const MAX_REPORT_BYTES = 16 * 1024 * 1024;
const MAX_PATH_CHARS = 512;
/** One folder name: letters, digits, ".", "_", "-", not starting with "." (no "..", no hidden). */
const SEGMENT = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const REPORT_FILE = 'report.json';

export class DrillReports {
  /** The folder, absolute, as configured (it may not exist yet: no drill has run). */
  readonly folder: string;
  /**
   * Each listed report's entry by path, with the file's size and time it was read at: a console
   * lists the folder every few seconds, and a report (every observation of a run) is re-read
   * only when it changed.
   */
  private readonly entries = new Map<string, { size: number; mtimeMs: number; entry: DrillReportEntry }>();

  constructor(folder: string) {
    this.folder = resolve(folder);
  }

  /** Every report under the folder, newest first; an absent folder has none. */
  async list(): Promise<DrillReportEntry[]> {
    const found: string[] = [];
    await this.scan(this.folder, [], found);
    const entries = await Promise.all(found.map((path) => this.entry(path)));
    const listed = new Set(found);
    for (const path of this.entries.keys()) if (!listed.has(path)) this.entries.delete(path);
    return entries.sort((a, b) => (b.startedAt > a.startedAt ? 1 : b.startedAt < a.startedAt ? -1 : 0));
  }

  /** One report, whole, by its folder's path; refuses any path that leaves the folder. */
  async read(path: string): Promise<unknown> {
    const file = await this.file(path);
    let text: string;
    try {
      const info = await lstat(file);
      if (!info.isFile()) throw notFound(path, this.folder);
      if (info.size > MAX_REPORT_BYTES)
        throw new ApiError(
          status.FAILED_PRECONDITION,
          `the drill report '${path}' is ${info.size} bytes, more than the ${MAX_REPORT_BYTES} a console reads`,
        );
      text = await readFile(file, 'utf8');
    } catch (err) {
      if (err instanceof ApiError) throw err;
      throw notFound(path, this.folder);
    }
    const report = parseReport(text);
    if (typeof report === 'string')
      throw new ApiError(
        status.FAILED_PRECONDITION,
        `'${path}/${REPORT_FILE}' is not a drill report: ${report}`,
      );
    return report;
  }

  /**
   * The report.json a path names, after checking the path word by word and that the real file
   * (links resolved) lies in the real folder. Errors name the field `path`.
   */
  async file(path: string): Promise<string> {
    const segments = checkPath(path);
    const wanted = join(this.folder, ...segments, REPORT_FILE);
    let real: string;
    let root: string;
    try {
      [root, real] = await Promise.all([realpath(this.folder), realpath(wanted)]);
    } catch {
      throw notFound(path, this.folder);
    }
    if (!inside(root, real))
      throw invalidArgument('path', `the drill report '${path}' lies outside the reports folder`);
    return real;
  }

  private async scan(dir: string, at: string[], found: string[]): Promise<void> {
    if (found.length >= MAX_REPORTS) return;
    let items: Dirent[];
    try {
      items = await readdir(dir, { withFileTypes: true });
    } catch {
      return; // absent or unreadable: nothing to list there
    }
    // Only real folders and files: a link could lead out of the reports folder.
    if (at.length > 0 && items.some((d) => d.isFile() && d.name === REPORT_FILE)) found.push(at.join('/'));
    if (at.length >= MAX_DEPTH) return;
    for (const d of items.filter((x) => x.isDirectory() && SEGMENT.test(x.name))) {
      await this.scan(join(dir, d.name), [...at, d.name], found);
      if (found.length >= MAX_REPORTS) return;
    }
  }

  private async entry(path: string): Promise<DrillReportEntry> {
    const empty = {
      path,
      drill: '',
      passed: false,
      quick: false,
      startedAt: '',
      durationMs: 0,
      held: 0,
      failed: 0,
    };
    let text: string;
    let info: { size: number; mtimeMs: number };
    try {
      const file = join(this.folder, ...path.split('/'), REPORT_FILE);
      info = await lstat(file);
      const known = this.entries.get(path);
      if (known && known.size === info.size && known.mtimeMs === info.mtimeMs) return known.entry;
      if (info.size > MAX_REPORT_BYTES) return { ...empty, error: 'larger than a console reads' };
      text = await readFile(file, 'utf8');
    } catch (err) {
      return { ...empty, error: `cannot be read: ${(err as Error).message}` };
    }
    const entry = summarize(path, text, empty);
    this.entries.set(path, { size: info.size, mtimeMs: info.mtimeMs, entry });
    return entry;
  }
}

/** A report's line in the listing, or why its file is not a report. */
function summarize(path: string, text: string, empty: DrillReportEntry): DrillReportEntry {
  const r = parseReport(text);
  if (typeof r === 'string') return { ...empty, error: r };
  const held = r.verdicts.filter((v) => (v as { ok?: unknown }).ok === true).length;
  return {
    path,
    drill: r.drill,
    passed: r.passed,
    quick: r.quick === true,
    startedAt: typeof r.startedAt === 'string' ? r.startedAt : '',
    durationMs: typeof r.durationMs === 'number' ? r.durationMs : 0,
    held,
    failed: r.verdicts.length - held,
  };
}

interface ReportShape {
  drill: string;
  passed: boolean;
  quick?: unknown;
  startedAt?: unknown;
  durationMs?: unknown;
  verdicts: unknown[];
}

/** The report, or why it is not one (the fields every report of `drill run` has). */
function parseReport(text: string): ReportShape | string {
  let r: unknown;
  try {
    r = JSON.parse(text);
  } catch {
    return 'not JSON';
  }
  const o = r as Partial<Record<keyof ReportShape, unknown>> | null;
  if (typeof o !== 'object' || o === null || Array.isArray(o)) return 'not a JSON object';
  if (typeof o.drill !== 'string') return 'no "drill" name';
  if (typeof o.passed !== 'boolean') return 'no "passed" verdict';
  if (!Array.isArray(o.verdicts)) return 'no "verdicts" list';
  return o as ReportShape;
}

/** The path's folder names, or an INVALID_ARGUMENT naming `path` that says what is wrong. */
export function checkPath(path: string): string[] {
  if (typeof path !== 'string' || path.length === 0) throw invalidArgument('path', 'the path is empty');
  if (path.length > MAX_PATH_CHARS)
    throw invalidArgument('path', `the path is longer than ${MAX_PATH_CHARS} characters`);
  if (isAbsolute(path) || path.startsWith('/') || path.includes('\\'))
    throw invalidArgument(
      'path',
      `'${path}' must be relative to the reports folder, with "/" between folders`,
    );
  const segments = path.split('/');
  if (segments.length > MAX_DEPTH)
    throw invalidArgument('path', `'${path}' is deeper than the ${MAX_DEPTH} folders searched for reports`);
  for (const s of segments)
    if (!SEGMENT.test(s))
      throw invalidArgument(
        'path',
        `'${path}': the folder name '${s}' is not allowed (letters, digits, ".", "_", "-"; not starting with ".")`,
      );
  return segments;
}

function inside(root: string, file: string): boolean {
  const rel = relative(root, file);
  return rel !== '' && !rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel);
}

function notFound(path: string, folder: string): ApiError {
  return new ApiError(
    status.NOT_FOUND,
    `no drill report '${path}' in ${folder}: run \`hyperfarm drill run\` first`,
  );
}

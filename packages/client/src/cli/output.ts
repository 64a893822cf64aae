import { stringify } from 'yaml';

/** How a command prints what it got: a table for people, JSON or YAML for programs. */
export type OutputFormat = 'table' | 'json' | 'yaml';
export const OUTPUT_FORMATS: OutputFormat[] = ['table', 'json', 'yaml'];

/** A column of a table: its header and how to get a cell from a row. */
export type Columns<T> = [header: string, cell: (row: T) => string][];

/**
 * Rows as columns separated by two spaces. With `width` (a terminal's), the widest columns are
 * cut, with '…', until the table fits: every column keeps at least its header's width.
 */
export function table(rows: string[][], width?: number): string {
  if (rows.length === 0) return '';
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => [...(r[i] ?? '')].length)));
  if (width !== undefined) {
    const floor = rows[0]!.map((h) => Math.max(3, h.length));
    const total = () => widths.reduce((a, b) => a + b, 0) + 2 * (widths.length - 1);
    while (total() > width) {
      const i = widths.reduce((best, w, j) => (w - floor[j]! > widths[best]! - floor[best]! ? j : best), 0);
      if (widths[i]! <= floor[i]!) break;
      widths[i]!--;
    }
  }
  const fit = (cell: string, w: number) => {
    const chars = [...cell];
    return chars.length <= w ? cell.padEnd(w) : `${chars.slice(0, w - 1).join('')}…`;
  };
  return (
    rows
      .map((r) =>
        r
          .map((c, i) => fit(c, widths[i]!))
          .join('  ')
          .trimEnd(),
      )
      .join('\n') + '\n'
  );
}

/** A list of objects as a table with these columns. */
export function tableOf<T>(items: T[], columns: Columns<T>, width?: number): string {
  return table(
    [columns.map(([h]) => h), ...items.map((item) => columns.map(([, cell]) => cell(item)))],
    width,
  );
}

/** `value` as JSON or YAML; for `table`, what `asTable` makes of it. */
export function render(format: OutputFormat, value: unknown, asTable: () => string): string {
  if (format === 'json') return `${JSON.stringify(value, null, 2)}\n`;
  if (format === 'yaml') return stringify(value);
  return asTable();
}

/** Field: value lines, for one object shown in full. */
export function fields(pairs: [string, string | number | boolean | undefined][]): string {
  const shown = pairs.filter(([, v]) => v !== undefined && v !== '');
  const w = Math.max(...shown.map(([k]) => k.length));
  return shown.map(([k, v]) => `${`${k}:`.padEnd(w + 2)}${String(v)}`).join('\n') + '\n';
}

// --- how values read in a table ---

/** An enum value without its type prefix, in the case Hyper-V writes it: VM_STATE_RUNNING -> Running. */
export function enumName(value: string | undefined, prefix: string): string {
  if (!value) return '';
  const bare = value.startsWith(prefix) ? value.slice(prefix.length) : value;
  if (bare === 'UNSPECIFIED') return '';
  return bare
    .split('_')
    .map((w) => w.charAt(0) + w.slice(1).toLowerCase())
    .join('');
}

export function bytes(n: number | undefined): string {
  if (!n) return '0';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${Number.isInteger(v) ? v : v.toFixed(1)} ${units[i]}`;
}

export function duration(ms: number | undefined): string {
  if (!ms) return '';
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60}s`;
  return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
}

export function time(ms: number | undefined): string {
  return ms ? new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z') : '';
}

import { invalidArgument, normalizeVmConfig, quote, validateVmConfig, type pb } from '@hyperfarm/api';
import type { FarmState, VmConfig } from '../fsm/index.js';

/**
 * Checks of request fields, each refusing with INVALID_ARGUMENT naming the field and the reason,
 * before anything is proposed or looked up. Every string from a request is bounded here, and
 * quoted (bounded again) in any message.
 */

const HOST_ID = /^[a-z0-9][a-z0-9-]{0,62}$/;
const ADDRESS = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]{1,253}):(\d{1,5})$/;
const REQUEST_ID = /^[A-Za-z0-9_-]{1,64}$/;
const MAX_REF = 128;

/** An id or name that names something (a VM, an operation, a snapshot): 1 to 128 characters. */
export function requireRef(field: string, value: string): string {
  if (value.length === 0) throw invalidArgument(field, 'is required');
  if ([...value].length > MAX_REF)
    throw invalidArgument(field, `${quote(value)} is longer than ${MAX_REF} characters`);
  return value;
}

export function requireHostId(field: string, value: string): string {
  if (!HOST_ID.test(value))
    throw invalidArgument(
      field,
      `${quote(value)} is not a host id (1 to 63 lowercase letters, digits or dashes)`,
    );
  return value;
}

export function requireAddress(field: string, value: string): string {
  const m = ADDRESS.exec(value);
  const port = m ? Number(m[2]) : 0;
  if (!m || port < 1 || port > 65535) throw invalidArgument(field, `${quote(value)} is not host:port`);
  return value;
}

export function optionalRequestId(field: string, value: string): string | undefined {
  if (value === '') return undefined;
  if (!REQUEST_ID.test(value))
    throw invalidArgument(field, `${quote(value)} must be 1 to 64 letters, digits, '-' or '_'`);
  return value;
}

export function requireHostName(field: string, value: string): string {
  if (!/^[A-Za-z0-9._-]{1,63}$/.test(value))
    throw invalidArgument(field, `${quote(value)} must be 1 to 63 letters, digits, '-', '_' or '.'`);
  return value;
}

export function requireLabels(field: string, labels: Record<string, string>): Record<string, string> {
  const entries = Object.entries(labels);
  if (entries.length > 64) throw invalidArgument(field, `${entries.length} labels, at most 64`);
  for (const [k, v] of entries) {
    if (k.length < 1 || k.length > 63)
      throw invalidArgument(field, `key ${quote(k)} must be 1 to 63 characters`);
    if (v.length > 255) throw invalidArgument(`${field}[${quote(k)}]`, 'must be at most 255 characters');
  }
  return { ...labels };
}

/** A VM configuration with the proto's defaults filled, checked against the farm's guests. */
export function requireVmConfig(
  s: FarmState,
  config: pb.VmConfig__Output | null,
  field = 'config',
): VmConfig {
  if (!config) throw invalidArgument(field, 'is required');
  const c = normalizeVmConfig(config);
  validateVmConfig(c, { guests: s.guests }, field);
  return c as VmConfig;
}

/** An enum that must be set: the proto's UNSPECIFIED (or an unknown number) is refused. */
export function requireEnum<T extends string>(
  field: string,
  value: string | number,
  allowed: readonly T[],
): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value))
    throw invalidArgument(
      field,
      `must be one of ${allowed.map((a) => a.replace(/^[A-Z]+_[A-Z]+_/, '')).join(', ')}`,
    );
  return value as T;
}

// --- paging ---

const DEFAULT_PAGE = 100;
const MAX_PAGE = 1000;

/** The page's size and the key its token names ('' for the first page), checked. */
function pageAsked(
  list: string,
  req: { pageSize: number; pageToken: string },
): { size: number; after: string } {
  const size = req.pageSize === 0 ? DEFAULT_PAGE : req.pageSize;
  if (size > MAX_PAGE) throw invalidArgument('page_size', `${req.pageSize} is above ${MAX_PAGE}`);
  let after = '';
  if (req.pageToken) {
    const text = Buffer.from(req.pageToken, 'base64url').toString('utf8');
    if (!text.startsWith(`${list}:`) || req.pageToken.length > 1024)
      throw invalidArgument('page_token', 'is not a token this list issued');
    after = text.slice(list.length + 1);
  }
  return { size, after };
}

const tokenFor = (list: string, lastKey: string): string =>
  Buffer.from(`${list}:${lastKey}`).toString('base64url');

/**
 * One page of `items` (sorted by `key`), after the key the token names. Tokens are opaque to
 * callers (base64url of the list's name and the last key).
 */
export function page<T>(
  list: string,
  items: Iterable<T>,
  key: (item: T) => string,
  req: { pageSize: number; pageToken: string },
): { items: T[]; nextPageToken: string } {
  const { size, after } = pageAsked(list, req);
  // The `size` smallest keys after `after`, kept sorted as the items go by, rather than sorting
  // them all: at 50,000 VMs every page sorted the whole farm (ListVms(100) p99 329 ms).
  const best: { k: string; item: T }[] = [];
  let remaining = 0;
  for (const item of items) {
    const k = key(item);
    if (k <= after) continue;
    remaining++;
    if (best.length === size && k >= best[size - 1]!.k) continue;
    let lo = 0;
    let hi = best.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (best[mid]!.k < k) lo = mid + 1;
      else hi = mid;
    }
    best.splice(lo, 0, { k, item });
    if (best.length > size) best.pop();
  }
  const out = best.map((b) => b.item);
  const more = remaining > size;
  return { items: out, nextPageToken: more ? tokenFor(list, key(out[out.length - 1]!)) : '' };
}

/**
 * `page`, for a list kept in key order: `inOrder(after)` gives the items whose keys are above
 * `after`, in order (filtered as the caller likes), and a page reads `size + 1` of them at most,
 * so it costs the page, not the list.
 */
export function pageInOrder<T>(
  list: string,
  inOrder: (after: string) => Iterable<T>,
  key: (item: T) => string,
  req: { pageSize: number; pageToken: string },
): { items: T[]; nextPageToken: string } {
  const { size, after } = pageAsked(list, req);
  const out: T[] = [];
  let more = false;
  for (const item of inOrder(after)) {
    if (out.length === size) {
      more = true;
      break;
    }
    out.push(item);
  }
  return { items: out, nextPageToken: more ? tokenFor(list, key(out[out.length - 1]!)) : '' };
}

import * as path from 'node:path';
import { pathToFileURL, fileURLToPath } from 'node:url';
import { PLATFORM_MACX, PLATFORM_W2KU, PLATFORM_W2RU, SECTOR_SIZE } from './constants.js';

/** A parent locator's payload before it is placed in the file. */
export interface LocatorPayload {
  platformCode: number;
  data: Buffer;
}

/**
 * The locators a differencing disk at `childPath` gets for its parent at
 * `parentPath` (both absolute POSIX paths here):
 * - W2ru: the relative path, Windows style (`.\base.vhd`), UTF-16LE, as Hyper-V writes it;
 * - W2ku: the absolute path with `\` separators, UTF-16LE (no drive letter on POSIX);
 * - MacX: the spec's Mac OS X locator, an RFC 2396 file URL in UTF-8, which is the
 *   only spec'd code meant for POSIX paths.
 */
export function buildParentLocators(childPath: string, parentPath: string): LocatorPayload[] {
  const relative = path.relative(path.dirname(childPath), parentPath);
  const relativeWindows = (relative.startsWith('..') ? relative : `./${relative}`).split('/').join('\\');
  return [
    { platformCode: PLATFORM_W2RU, data: Buffer.from(relativeWindows, 'utf16le') },
    { platformCode: PLATFORM_W2KU, data: Buffer.from(parentPath.split('/').join('\\'), 'utf16le') },
    { platformCode: PLATFORM_MACX, data: Buffer.from(pathToFileURL(parentPath).href, 'utf8') },
  ];
}

/** Sectors reserved for a locator's data: whole sectors, at least one. */
export function locatorSectors(dataLength: number): number {
  return Math.max(1, Math.ceil(dataLength / SECTOR_SIZE));
}

/**
 * The path a locator points at, resolved against the child's directory, or undefined
 * when it cannot name a file on this system (e.g. a Windows drive-letter path).
 */
export function locatorToPath(platformCode: number, data: Buffer, childPath: string): string | undefined {
  const childDir = path.dirname(childPath);
  switch (platformCode) {
    case PLATFORM_W2RU: {
      const p = stripNul(data.toString('utf16le')).split('\\').join('/');
      return p ? path.resolve(childDir, p) : undefined;
    }
    case PLATFORM_W2KU: {
      const p = stripNul(data.toString('utf16le'));
      if (/^[A-Za-z]:/.test(p) || p.startsWith('\\\\')) return undefined;
      return p ? path.resolve(childDir, p.split('\\').join('/')) : undefined;
    }
    case PLATFORM_MACX: {
      const url = stripNul(data.toString('utf8'));
      try {
        return url.startsWith('file://') ? fileURLToPath(url) : undefined;
      } catch {
        // Some writers store "file://./relative": resolve that against the child's folder.
        return url.startsWith('file://./') ? path.resolve(childDir, decodeURI(url.slice(7))) : undefined;
      }
    }
    default:
      return undefined;
  }
}

/** Order in which locators are tried: relative first, so a moved folder still works. */
export function locatorPreference(platformCode: number): number {
  switch (platformCode) {
    case PLATFORM_W2RU:
      return 0;
    case PLATFORM_MACX:
      return 1;
    case PLATFORM_W2KU:
      return 2;
    default:
      return 3;
  }
}

export function platformName(code: number): string {
  return Buffer.from([code >>> 24, (code >>> 16) & 0xff, (code >>> 8) & 0xff, code & 0xff]).toString(
    'latin1',
  );
}

function stripNul(s: string): string {
  const i = s.indexOf('\0');
  return i === -1 ? s : s.slice(0, i);
}

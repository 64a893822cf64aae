import { MAX_CHS_SECTORS, SECTOR_SIZE } from './constants.js';

export interface Geometry {
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
}

/** CHS geometry for a disk of `totalSectors`, exactly as the spec's appendix computes it. */
export function geometryForSectors(totalSectors: number): Geometry {
  const sectors = Math.min(totalSectors, MAX_CHS_SECTORS);
  let sectorsPerTrack: number;
  let heads: number;
  let cylinderTimesHeads: number;
  if (sectors >= 65535 * 16 * 63) {
    sectorsPerTrack = 255;
    heads = 16;
    cylinderTimesHeads = Math.floor(sectors / sectorsPerTrack);
  } else {
    sectorsPerTrack = 17;
    cylinderTimesHeads = Math.floor(sectors / sectorsPerTrack);
    heads = Math.floor((cylinderTimesHeads + 1023) / 1024);
    if (heads < 4) heads = 4;
    if (cylinderTimesHeads >= heads * 1024 || heads > 16) {
      sectorsPerTrack = 31;
      heads = 16;
      cylinderTimesHeads = Math.floor(sectors / sectorsPerTrack);
    }
    if (cylinderTimesHeads >= heads * 1024) {
      sectorsPerTrack = 63;
      heads = 16;
      cylinderTimesHeads = Math.floor(sectors / sectorsPerTrack);
    }
  }
  return { cylinders: Math.floor(cylinderTimesHeads / heads), heads, sectorsPerTrack };
}

export function geometrySectors(g: Geometry): number {
  return g.cylinders * g.heads * g.sectorsPerTrack;
}

export function isMaxGeometry(g: Geometry): boolean {
  return geometrySectors(g) === MAX_CHS_SECTORS;
}

/**
 * The virtual size a disk of (at least) `requestedBytes` gets, and its geometry.
 *
 * Readers disagree on a VHD's size: Virtual PC and qemu (for creator apps other than
 * 'win ', 'qem2', 'd2v ', 'CTXS', 'tap') take cylinders*heads*sectors, Hyper-V takes the
 * footer's current size. Rounding the size up to a whole CHS geometry, as Virtual PC and
 * `qemu-img create` do, makes both answers equal. Above the largest geometry every reader
 * uses the current size, so no rounding is needed there.
 */
export function roundSizeToGeometry(requestedBytes: number): { size: number; geometry: Geometry } {
  const sectors = Math.ceil(requestedBytes / SECTOR_SIZE);
  for (let probe = sectors; ; probe++) {
    const g = geometryForSectors(probe);
    if (isMaxGeometry(g)) return { size: sectors * SECTOR_SIZE, geometry: g };
    const chs = geometrySectors(g);
    if (chs >= sectors) return { size: chs * SECTOR_SIZE, geometry: g };
  }
}

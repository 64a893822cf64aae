import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** One process of a local farm, as `.hyperfarm/farm.json` lists it. */
export interface FarmProcess {
  role: 'daemon' | 'agent';
  id: string;
  grpcAddress: string;
  metricsAddress: string;
  pid: number;
  dataDir: string;
  log: string;
}

/** The description of a running local farm, written once every process answers health checks. */
export interface FarmFile {
  version: 1;
  dataDir: string;
  launcherPid: number;
  startedAt: string;
  processes: FarmProcess[];
}

export const farmFilePath = (dataDir: string): string => join(dataDir, 'farm.json');

export function readFarmFile(dataDir: string): FarmFile | undefined {
  const path = farmFilePath(dataDir);
  if (!existsSync(path)) return undefined;
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as FarmFile;
  } catch {
    return undefined;
  }
}

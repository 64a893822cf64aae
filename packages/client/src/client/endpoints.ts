import { readFarmFile } from '@hyperfarm/api';
import { resolve } from 'node:path';

/** A daemon address as the client accepts it: host:port, with IPv6 hosts in brackets. */
const ENDPOINT = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]{1,253}):(\d{1,5})$/;

/** A list of daemon addresses that cannot be used, naming where it came from. */
export class EndpointError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'EndpointError';
  }
}

/** "a:1,b:2" (commas or spaces) as a checked list of host:port, duplicates removed. */
export function parseEndpoints(text: string, source: string): string[] {
  const list = text.split(/[\s,]+/).filter((e) => e !== '');
  if (list.length === 0) throw new EndpointError(`${source}: no daemon address given`);
  for (const e of list) {
    const m = ENDPOINT.exec(e);
    const port = m ? Number(m[2]) : 0;
    if (!m || port < 1 || port > 65535) throw new EndpointError(`${source}: '${e}' is not host:port`);
  }
  return [...new Set(list)];
}

export interface EndpointSources {
  /** From the command line (`--endpoints`), if given. */
  flag?: string | undefined;
  /** The environment; HYPERFARM_ENDPOINTS is read from it. */
  env?: NodeJS.ProcessEnv;
  /** A local farm's data folder, whose farm.json lists its daemons (default `.hyperfarm`). */
  dataDir?: string;
}

/**
 * Where the farm is: the flag, else HYPERFARM_ENDPOINTS, else every daemon listed in the local
 * farm's farm.json (written by `npm start`). The first that is set wins; none is merged.
 */
export function resolveEndpoints(sources: EndpointSources = {}): { endpoints: string[]; from: string } {
  if (sources.flag !== undefined)
    return { endpoints: parseEndpoints(sources.flag, '--endpoints'), from: '--endpoints' };
  const env = (sources.env ?? process.env).HYPERFARM_ENDPOINTS;
  if (env !== undefined && env !== '')
    return { endpoints: parseEndpoints(env, 'HYPERFARM_ENDPOINTS'), from: 'HYPERFARM_ENDPOINTS' };
  const dataDir = sources.dataDir ?? '.hyperfarm';
  const farm = readFarmFile(resolve(dataDir));
  if (!farm)
    throw new EndpointError(
      `no farm to talk to: pass --endpoints host:port[,host:port...], set HYPERFARM_ENDPOINTS, or start a local farm with \`npm start\` (none found in ${dataDir}/)`,
    );
  const daemons = farm.processes.filter((p) => p.role === 'daemon').map((p) => p.grpcAddress);
  if (daemons.length === 0) throw new EndpointError(`the farm in ${dataDir}/farm.json lists no daemon`);
  return { endpoints: daemons, from: `${dataDir}/farm.json` };
}

import { createServer, type AddressInfo, type Server } from 'node:net';

/**
 * Reserves `count` distinct free TCP ports on `host`. All are held open together, so no two are
 * the same, then released for the children to bind. Another program could take one in between;
 * the launcher then reports which child failed to bind.
 */
export async function freePorts(host: string, count: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const server = createServer();
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, host, () => resolve());
      });
    }
    return servers.map((s) => (s.address() as AddressInfo).port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  }
}

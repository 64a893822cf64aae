import {
  createClient,
  hyperfarmProto,
  leaderHint,
  promiseClient,
  type ClientOptions,
  type Logger,
  type pb,
} from '@hyperfarm/api';

export interface Registrant {
  id: string;
  /** Where the daemons reach this host's AgentService. */
  address: string;
  /** Takes what the farm assigned (its MAC range) from the answer. */
  registered(host: pb.Host__Output): void;
}

/**
 * Registrations in flight at once per process. A daemon answers a registration only after asking
 * the host to describe itself, so a multi-host process that sent all of its 250 at once had them
 * time out against its own busy event loop, and retried them all again.
 */
const IN_FLIGHT = 16;

/**
 * Registers hosts with the control daemons at start-up (and so again after every restart): each
 * host calls ClusterService.RegisterHost with its own address, trying the daemons in turn (any
 * daemon will do: a follower forwards the write) and again with backoff until one answers. At
 * most IN_FLIGHT at once; the others wait their turn.
 */
export function registerWithDaemons(
  daemons: readonly string[],
  hosts: readonly Registrant[],
  logger: Logger,
  client: ClientOptions = {},
): { stop(): void } {
  const clients = daemons.map((d) =>
    promiseClient(createClient(hyperfarmProto().hyperfarm.v1.ClusterService, d, client)),
  );
  let stopped = false;
  const timers = new Set<NodeJS.Timeout>();
  const queue: { host: Registrant; n: number }[] = [];
  let inFlight = 0;
  const next = (): void => {
    while (!stopped && inFlight < IN_FLIGHT && queue.length > 0) {
      const { host, n } = queue.shift()!;
      inFlight++;
      attempt(host, n);
    }
  };
  const done = (): void => {
    inFlight--;
    next();
  };
  const enqueue = (host: Registrant, n: number): void => {
    queue.push({ host, n });
    next();
  };

  const attempt = (host: Registrant, n: number): void => {
    const i = n % clients.length;
    clients[i]!.registerHost({ address: host.address }, { timeoutMs: 5_000 }).then(
      (answer) => {
        done();
        host.registered(answer);
        logger.info(
          { host: host.id, daemon: daemons[i], macs: answer.macPoolStart },
          'registered with the farm',
        );
      },
      (err: unknown) => {
        done();
        const leader = leaderHint(err)?.address;
        const then = leader && daemons.includes(leader) ? daemons.indexOf(leader) : n + 1;
        const delay = Math.min(5_000, 100 * 2 ** Math.min(n, 6));
        logger.debug(
          { host: host.id, daemon: daemons[i], err: (err as Error).message, retryInMs: delay },
          'registration failed',
        );
        const t = setTimeout(() => {
          timers.delete(t);
          enqueue(host, then);
        }, delay);
        timers.add(t);
      },
    );
  };

  if (clients.length > 0) for (const h of hosts) enqueue(h, 0);
  return {
    stop() {
      stopped = true;
      for (const t of timers) clearTimeout(t);
    },
  };
}

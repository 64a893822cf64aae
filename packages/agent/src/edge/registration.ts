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
 * Registers hosts with the control daemons at start-up (and so again after every restart): each
 * host calls ClusterService.RegisterHost with its own address, trying the daemons in turn (any
 * daemon will do: a follower forwards the write) and again with backoff until one answers.
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

  const attempt = (host: Registrant, n: number): void => {
    if (stopped) return;
    const i = n % clients.length;
    clients[i]!.registerHost({ address: host.address }, { timeoutMs: 5_000 }).then(
      (answer) => {
        host.registered(answer);
        logger.info(
          { host: host.id, daemon: daemons[i], macs: answer.macPoolStart },
          'registered with the farm',
        );
      },
      (err: unknown) => {
        const leader = leaderHint(err)?.address;
        const next = leader && daemons.includes(leader) ? daemons.indexOf(leader) : n + 1;
        const delay = Math.min(5_000, 100 * 2 ** Math.min(n, 6));
        logger.debug(
          { host: host.id, daemon: daemons[i], err: (err as Error).message, retryInMs: delay },
          'registration failed',
        );
        const t = setTimeout(() => {
          timers.delete(t);
          attempt(host, next);
        }, delay);
        timers.add(t);
      },
    );
  };

  if (clients.length > 0) for (const h of hosts) attempt(h, 0);
  return {
    stop() {
      stopped = true;
      for (const t of timers) clearTimeout(t);
    },
  };
}

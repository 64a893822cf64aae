/**
 * Following a daemon's Watch stream the way a client must: from a revision, again from the last
 * one seen when the stream ends (at the next daemon), and from the current revision when the one
 * asked for is no longer kept (a gap the caller hears of).
 */
import { createClient, hyperfarmProto, promiseClient, type pb } from '@hyperfarm/api';

export interface FollowOptions {
  /** Where to follow: the first address, then the others in turn each time the stream ends. */
  addresses: string[];
  fromRevision: number;
  kinds?: pb.WatchRequest['kinds'];
  onEvent: (e: pb.Event__Output) => void;
  onGap?: () => void;
  say?: (line: string) => void;
}

export interface Following {
  stop: () => void;
  restarts: () => number;
}

export function followWatch(o: FollowOptions): Following {
  let revision = o.fromRevision - 1;
  let watching = true;
  let restarts = 0;
  let current: { cancel: () => void } | undefined;
  const follow = (n: number, from: number): void => {
    const address = o.addresses[n % o.addresses.length]!;
    const raw = createClient(hyperfarmProto().hyperfarm.v1.ClusterService, address);
    const stream = raw.watch({ fromRevision: from, kinds: o.kinds ?? [] });
    current = stream;
    stream.on('data', (e: pb.Event__Output) => {
      revision = Math.max(revision, Number(e.revision));
      o.onEvent(e);
    });
    let again = false;
    const reopen = (err?: Error & { code?: number }) => {
      if (again || !watching) return;
      again = true;
      restarts++;
      raw.close();
      // 11: OUT_OF_RANGE, the revision asked for is compacted away.
      const gap = err?.code === 11;
      o.say?.(`  the Watch stream ended (${err?.message ?? 'closed'}); following again`);
      setTimeout(() => {
        if (!gap) return follow(n + 1, revision + 1);
        const next = o.addresses[(n + 1) % o.addresses.length]!;
        void promiseClient(createClient(hyperfarmProto().hyperfarm.v1.ClusterService, next))
          .getClusterStatus({})
          .then((s) => {
            o.onGap?.();
            revision = Number(s.revision);
            follow(n + 1, revision + 1);
          })
          .catch(() => follow(n + 1, revision + 1));
      }, 200);
    };
    stream.on('error', reopen);
    stream.on('end', () => reopen());
  };
  follow(0, o.fromRevision);
  return {
    stop: () => {
      watching = false;
      current?.cancel();
    },
    restarts: () => restarts,
  };
}

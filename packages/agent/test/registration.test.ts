import { expect } from 'chai';
import {
  createLogger,
  createServer,
  status,
  withUnimplemented,
  type pb,
  type RunningServer,
} from '@hyperfarm/api';
import { registerWithDaemons } from '../src/edge/registration.js';

// Registration of the hosts of a multi-host agent process with the daemons.

const logger = createLogger({ program: 't', id: 'reg', level: 'silent' });

/** A daemon whose RegisterHost answers after the test lets it, counting the calls in flight. */
async function slowDaemon(): Promise<{
  server: RunningServer;
  registered: Set<string>;
  maxInFlight: () => number;
  release: () => void;
}> {
  const registered = new Set<string>();
  const waiting: (() => void)[] = [];
  let inFlight = 0;
  let max = 0;
  let open = false;
  const server = await createServer({ logger })
    .add(
      'cluster',
      withUnimplemented(
        'cluster',
        {
          RegisterHost: (call, cb) => {
            inFlight++;
            max = Math.max(max, inFlight);
            const answer = () => {
              inFlight--;
              // The first answer of each host fails once: a retry must not exceed the bound either.
              if (!registered.has(`tried:${call.request.address}`)) {
                registered.add(`tried:${call.request.address}`);
                cb({ code: status.UNAVAILABLE, details: 'busy' });
                return;
              }
              registered.add(call.request.address);
              cb(null, { id: call.request.address, macPoolStart: '00:15:5d:00:00:00' } as pb.Host);
            };
            if (open) setImmediate(answer);
            else waiting.push(answer);
          },
        },
        'not in this test',
      ),
    )
    .listen('127.0.0.1:0');
  return {
    server,
    registered,
    maxInFlight: () => max,
    release: () => {
      open = true;
      for (const w of waiting.splice(0)) w();
    },
  };
}

describe('registration with the daemons', () => {
  it('registers every host of a 60-host process, at most 16 at a time, retrying a failed one', async () => {
    const d = await slowDaemon();
    const hosts = Array.from({ length: 60 }, (_, i) => ({
      id: `h-${i}`,
      address: `127.0.0.1:${20_000 + i}`,
      registered: () => undefined,
    }));
    const reg = registerWithDaemons([d.server.address], hosts, logger);
    try {
      // Wait until the first calls arrive and are held.
      for (let i = 0; i < 500 && d.maxInFlight() < 16; i++) await new Promise((r) => setTimeout(r, 10));
      await new Promise((r) => setTimeout(r, 50));
      expect(d.maxInFlight()).to.equal(16);
      d.release();
      for (let i = 0; i < 1000 && hosts.some((h) => !d.registered.has(h.address)); i++)
        await new Promise((r) => setTimeout(r, 10));
      expect(hosts.filter((h) => !d.registered.has(h.address))).to.deep.equal([]);
      expect(d.maxInFlight()).to.equal(16);
    } finally {
      reg.stop();
      await d.server.shutdown();
    }
  });
});

/**
 * The receiving end of bench:nlb's tunnel figure, in a process of its own: it pulls frames from
 * the sender at the address given and, once `count` frames have arrived, prints one JSON line
 * (frames, and the milliseconds from the first frame to the last) and exits.
 *
 *   node --import tsx scripts/bench/nlb-tunnel-peer.ts <sender address> <count>
 */
import { createLogger } from '@hyperfarm/api';
import { Tunnels } from '../../packages/agent/src/network/edge/tunnel.js';

const [address, countText] = process.argv.slice(2);
const count = Number(countText);
let received = 0;
let firstAt = 0;
const tunnels = new Tunnels({
  hostId: 'receiver',
  logger: createLogger({ program: 'bench-nlb-peer', id: 'receiver', level: 'warn' }),
  deliver: (_peer, _switch, frames) => {
    if (received === 0) firstAt = performance.now();
    received += frames.length;
    if (received >= count) {
      console.log(JSON.stringify({ frames: received, ms: performance.now() - firstAt }));
      tunnels.close();
      process.exit(0);
    }
  },
  dropped: () => undefined,
});
tunnels.setPeers([{ hostId: 'sender', address: address! }]);

/**
 * Network and NLB figures:
 *  - frames per second through one host's switch (known unicast between two VM ports, each
 *    frame learned, forwarded and handed to the receiving adapter);
 *  - frames per second across a tunnel: this process sends data frames to a second process over
 *    the real gRPC tunnel (encoded, batched, flow-controlled), which counts them;
 *  - convergence after a member's host dies, on the virtual clock, at Windows NLB's defaults (1 s
 *    heartbeats, lost after 5) and with fast heartbeats (250 ms, 5), the worst of 20 kill times
 *    spread over a heartbeat period;
 *  - requests lost while a member's host fails under a steady request rate, at the defaults.
 * Windows NLB, the peer, is described by Microsoft as taking about 5 s to detect a lost host and
 * 2.5 to 3 s more to converge at its defaults; those figures are printed alongside.
 *
 *   node --import tsx scripts/bench/nlb.ts [--frames 300000] [--tunnel-frames 300000]
 *
 * The last line is one JSON object.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createLogger, createServer, serverStream, type pb } from '@hyperfarm/api';
import { encodeFrame } from '../../packages/agent/src/network/codec.js';
import type { Frame } from '../../packages/agent/src/network/frame.js';
import { Tunnels } from '../../packages/agent/src/network/edge/tunnel.js';
import { HostNetwork } from '../../packages/agent/src/network/host-network.js';
import { parseIpv4 } from '../../packages/agent/src/network/addr.js';
import { DEFAULT_PORT_RULE, type NlbClusterConfig } from '../../packages/agent/src/network/nlb/config.js';
import { NetworkSim } from '../../packages/agent/src/network/sim.js';

const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const FRAMES = arg('frames', 300_000);
const TUNNEL_FRAMES = arg('tunnel-frames', 300_000);
const ip = (t: string): number => parseIpv4(t)!;
const A = '00-15-5D-00-20-01';
const B = '00-15-5D-00-20-02';

/** A 1 KB data segment from A to B, as a request in the middle of a connection would be. */
function dataFrame(i: number): Frame {
  return {
    src: A,
    dst: B,
    vlan: 0,
    body: {
      type: 'ipv4',
      packet: {
        src: ip('10.0.0.1'),
        dst: ip('10.0.0.99'),
        srcPort: 40_000,
        dstPort: 80,
        protocol: 'conn',
        seg: { kind: 'data', conn: 1, token: 7, seq: i, bytes: 1_000, respond: 0, servedBy: '' },
      },
    },
  };
}

function switchFramesPerSecond(): number {
  const net = new HostNetwork({
    hostId: 'h1',
    seed: 1,
    startMs: 0,
    guest: () => ({ serviceTimeMs: 1, workers: 1 }),
  });
  net.setSwitches([{ name: 'ext', type: 'external', agingMs: 300_000 }]);
  net.attachVm('a', [{ index: 0, mac: A, switchName: 'ext', vlan: 0 }], 'running');
  net.attachVm('b', [{ index: 0, mac: B, switchName: 'ext', vlan: 0 }], 'running');
  // B speaks once, so A's frames to it are known unicast from then on.
  net.inject('ext', 'b#0', { ...dataFrame(0), src: B, dst: A });
  const frames = Array.from({ length: 1024 }, (_, i) => dataFrame(i));
  const t0 = performance.now();
  for (let i = 0; i < FRAMES; i++) net.inject('ext', 'a#0', frames[i & 1023]!);
  const s = (performance.now() - t0) / 1000;
  const port = net.switchStatus('ext').ports.find((p) => p.id === 'b#0')!;
  if (port.counters.sent < FRAMES) throw new Error(`only ${port.counters.sent} frames reached b`);
  return FRAMES / s;
}

async function tunnelFramesPerSecond(): Promise<{ fps: number; mbps: number }> {
  const logger = createLogger({ program: 'bench-nlb', id: 'sender', level: 'warn' });
  const tunnels = new Tunnels({
    hostId: 'sender',
    logger,
    deliver: () => undefined,
    dropped: () => {
      throw new Error('the bench sender must never drop a frame');
    },
  });
  const server = await createServer({ logger })
    .add('tunnel', {
      Pull: serverStream<pb.PullRequest__Output, pb.FrameBatch>((req, call) =>
        tunnels.serve(req.hostId, call),
      ),
    })
    .listen('127.0.0.1:0');
  tunnels.setPeers([{ hostId: 'receiver', address: '127.0.0.1:1' }]);
  const peer = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      fileURLToPath(new URL('./nlb-tunnel-peer.ts', import.meta.url)),
      server.address,
      String(TUNNEL_FRAMES),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let out = '';
  peer.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const done = new Promise<void>((resolve) => peer.on('exit', () => resolve()));
  while (!tunnels.pulled('receiver')) await new Promise((r) => setTimeout(r, 10));
  const frames = Array.from({ length: 1024 }, (_, i) => dataFrame(i));
  const frameBytes = encodeFrame(frames[0]!).length;
  // Paced on the queue so that nothing is dropped: the figure is what the tunnel carries.
  for (let sent = 0; sent < TUNNEL_FRAMES;) {
    while (sent < TUNNEL_FRAMES && tunnels.queued('receiver') < 4_096)
      tunnels.send('receiver', 'ext', frames[sent++ & 1023]!);
    await new Promise((r) => setImmediate(r));
  }
  await done;
  tunnels.close();
  await server.shutdown(100);
  const r = JSON.parse(out.trim().split('\n').pop()!) as { frames: number; ms: number };
  return { fps: r.frames / (r.ms / 1000), mbps: (r.frames * frameBytes * 8) / (r.ms / 1000) / 1e6 };
}

const cluster = (periodMs: number): NlbClusterConfig => ({
  id: 'web',
  vip: ip('10.0.0.100'),
  mode: 'unicast',
  switchName: 'ext',
  rules: [DEFAULT_PORT_RULE],
  members: ['a', 'b', 'c'].map((vmId, i) => ({ vmId, priority: i + 1, loadWeight: 50, rules: [] })),
  heartbeatPeriodMs: periodMs,
  heartbeatThreshold: 5,
});

function farm(periodMs: number, serviceTimeMs = 5): NetworkSim {
  const sim = new NetworkSim({ latencyMs: 0.2, guest: () => ({ serviceTimeMs, workers: 16 }) });
  ['a', 'b', 'c'].forEach((vm, i) => {
    const h = sim.addHost(`h${i + 1}`);
    h.setSwitches([{ name: 'ext', type: 'external', agingMs: 300_000 }]);
    h.attachVm(vm, [{ index: 0, mac: `00-15-5D-00-21-0${i + 1}`, switchName: 'ext', vlan: 0 }], 'running');
  });
  for (const h of sim.hosts.values()) h.setNlbClusters([cluster(periodMs)]);
  return sim;
}

const statuses = (sim: NetworkSim) =>
  [...sim.hosts].filter(([id]) => !sim.isDown(id)).flatMap(([, h]) => h.nlbStatus('web'));
const convergedOn = (sim: NetworkSim, n: number) =>
  statuses(sim).every((s) => s.state === 'converged' && s.view.length === n && s.unconfirmedBuckets === 0);

/** Milliseconds from a host's death to the survivors agreeing on a map without it (worst of 20). */
function convergenceMs(periodMs: number): { worst: number; best: number } {
  let worst = 0;
  let best = Infinity;
  for (let k = 0; k < 20; k++) {
    const sim = farm(periodMs);
    sim.runUntil(() => convergedOn(sim, 3), 60_000);
    sim.run(periodMs * 2 + (periodMs * k) / 20);
    const killedAt = sim.nowMs;
    sim.kill('h3');
    if (!sim.runUntil(() => convergedOn(sim, 2), 60_000)) throw new Error('no convergence');
    const ms = sim.nowMs - killedAt;
    worst = Math.max(worst, Math.round(ms));
    best = Math.min(best, Math.round(ms));
  }
  return { worst, best };
}

/** Requests never answered when a member's host dies under a steady rate, at the defaults. */
function lostOnHostFailure(): { lost: number; total: number; rate: number; perConnection: number } {
  const sim = farm(1_000, 20);
  sim.runUntil(() => convergedOn(sim, 3), 60_000);
  const rate = 200;
  const perConnection = 10;
  const h1 = sim.host('h1');
  h1.startTraffic('t', 'ext', 0, {
    vip: ip('10.0.0.100'),
    port: 80,
    protocol: 'conn',
    ratePerSec: rate,
    durationMs: 20_000,
    clients: 10_000,
    networks: 500,
    firstClientIp: ip('172.16.0.0'),
    requestsPerConnection: perConnection,
    requestBytes: 200,
    responseBytes: 2_000,
    rtoMs: 250,
    maxRetries: 5,
    seed: 11,
    mac: '00-15-5D-FD-00-01',
    ip: ip('10.0.0.1'),
  });
  sim.run(5_000);
  sim.kill('h3');
  sim.run(30_000);
  const r = h1.trafficReport('t');
  let started = 0;
  let answered = 0;
  for (const p of Object.values(r.phases)) {
    started += p.started;
    answered += p.requests;
  }
  return { lost: started * perConnection - answered, total: started * perConnection, rate, perConnection };
}

async function main(): Promise<void> {
  const fps = switchFramesPerSecond();
  console.log(
    `one host's switch: ${Math.round(fps).toLocaleString('en')} frames/s (known unicast, 1 KB data segments)`,
  );
  const tunnel = await tunnelFramesPerSecond();
  console.log(
    `across a tunnel (gRPC server stream, another process): ${Math.round(tunnel.fps).toLocaleString('en')} frames/s, ${tunnel.mbps.toFixed(0)} Mbit/s of encoded frames`,
  );
  const def = convergenceMs(1_000);
  const fast = convergenceMs(250);
  console.log(
    `convergence after a host dies, Windows defaults (1 s x 5): ${def.best}-${def.worst} ms; Windows NLB: about 5,000 ms to detect plus 2,500-3,000 ms to converge`,
  );
  console.log(`convergence with 250 ms heartbeats x 5: ${fast.best}-${fast.worst} ms (goal: under 1,500 ms)`);
  const lost = lostOnHostFailure();
  console.log(
    `a member's host dies under ${lost.rate} connections/s of ${lost.perConnection} requests: ${lost.lost} of ${lost.total} requests never answered`,
  );
  console.log(
    JSON.stringify({
      frames_per_s: Math.round(fps),
      tunnel_frames_per_s: Math.round(tunnel.fps),
      tunnel_mbit_per_s: Math.round(tunnel.mbps),
      convergence_ms_default: Math.round(def.worst),
      convergence_ms_fast: Math.round(fast.worst),
      lost_requests_on_host_failure: lost.lost,
      requests_during_failure_run: lost.total,
    }),
  );
}

await main();

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  checkLinearizable,
  HistoryRecorder,
  kvModel,
  type KvInput,
  type KvOutput,
} from '../../src/checker/index.js';
import { KvClient, KvCluster, NotAcceptedError } from '../../src/node/kv-cluster.js';
import { waitFor, waitForAsync } from '../transport/helpers.js';

/**
 * Three real kv-server processes on loopback. Clients write and read while the leader is killed
 * with SIGKILL again and again (and restarted). Afterwards every acknowledged write must be
 * there, and the whole history (including writes whose outcome is unknown) must be linearizable.
 */

const pause = (): Promise<void> => new Promise((r) => setTimeout(r, 20));

/**
 * The built server starts in a fraction of the time tsx needs; use it only when it is newer than
 * every source file, so the test never runs stale code.
 */
function distIsFresh(): boolean {
  const src = fileURLToPath(new URL('../../src', import.meta.url));
  const dist = fileURLToPath(new URL('../../dist/node/kv-server.js', import.meta.url));
  if (!existsSync(dist)) return false;
  const built = statSync(dist).mtimeMs;
  const newest = (dir: string): number =>
    Math.max(
      0,
      ...readdirSync(dir, { withFileTypes: true }).map((d) =>
        d.isDirectory() ? newest(join(dir, d.name)) : statSync(join(dir, d.name)).mtimeMs,
      ),
    );
  return newest(src) <= built;
}

const KILLS = Number(process.env.RAFT_KILLS ?? 5);
const CLIENTS = 4;
const SHARED_KEYS = 6;

describe('kv-server processes under kill -9 of the leader', function () {
  this.timeout(180_000);
  let root: string;
  let cluster: KvCluster | undefined;
  afterEach(async () => {
    await cluster?.close();
    rmSync(root, { recursive: true, force: true });
  });

  it(`keeps every acknowledged write and stays linearizable across ${KILLS} leader kills`, async () => {
    root = mkdtempSync(join(tmpdir(), 'raft-kill-'));
    // Faster ticks than the defaults keep the test short; the benchmark measures the defaults.
    cluster = await KvCluster.start({
      size: 3,
      root,
      args: ['--tick-ms', '50', '--snapshot-every', '300'],
      entry: distIsFresh() ? 'dist' : 'source',
    });
    const c = cluster;
    const history = new HistoryRecorder<KvInput, KvOutput>();
    const acknowledged = new Map<string, string>(); // unique key -> value
    let acks = 0;
    let stop = false;

    const clientLoop = async (client: number): Promise<void> => {
      const kv = new KvClient(c);
      for (let i = 0; !stop; i++) {
        const roll = (client * 7919 + i * 104729) % 10;
        if (roll < 4) {
          // A write to a key of its own: must survive.
          const key = `u-${client}-${i}`;
          const value = `${client}:${i}`;
          try {
            await kv.putOnce(key, value, 3_000);
            acknowledged.set(key, value);
            acks++;
          } catch {
            // Refused or unknown: not acknowledged, so not checked for presence. Pause before the
            // retry so clients do not spin while an election runs.
            await pause();
          }
        } else {
          const key = `s${(client + i) % SHARED_KEYS}`;
          const input: KvInput = roll < 8 ? { op: 'put', key, value: `${client}:${i}` } : { op: 'get', key };
          const id = history.invoke(client, input, performance.now());
          try {
            if (input.op === 'put') {
              await kv.putOnce(key, input.value, 3_000);
              acks++;
              history.complete(id, null, performance.now());
            } else {
              const value = await kv.get(key, 3_000);
              history.complete(id, value, performance.now());
            }
          } catch (err) {
            // Refused before reaching the log, or a read that failed: no effect. Otherwise unknown.
            if (err instanceof NotAcceptedError || input.op === 'get') history.fail(id);
            else history.abandon(id);
            await pause();
          }
        }
        if (i % 20 === 0) await new Promise((r) => setImmediate(r));
      }
    };
    const clients = Array.from({ length: CLIENTS }, (_, i) => clientLoop(i));
    const t0 = performance.now();
    const phases: string[] = [];

    try {
      for (let k = 0; k < KILLS; k++) {
        const before = acks;
        await waitFor('writes before the kill', () => acks >= before + 30, 30_000);
        const tBefore = performance.now();
        const leader = await c.leader();
        await c.kill(leader);
        const tKill = performance.now();
        const afterKill = acks;
        await waitFor('writes committed by a new leader', () => acks >= afterKill + 10, 30_000);
        const tFailover = performance.now();
        await c.launch(leader);
        const tLaunch = performance.now();
        // The restarted node must catch up before the next kill, or two of three would be down.
        const target = (await c.call(await c.leader(), 'GET', '/status')).body.commit as number;
        await waitForAsync(
          `${leader.id} to catch up`,
          async () =>
            ((await c.call(leader, 'GET', '/status', undefined, 1_000)).body.applied as number) >= target,
          30_000,
        );
        const ms = (a: number, b: number): number => Math.round(b - a);
        phases.push(
          `kill ${k + 1}: ${leader.id}; at ${ms(t0, tBefore)} ms, ` +
            `failover ${ms(tKill, tFailover)} ms, restart ${ms(tFailover, tLaunch)} ms, catch-up ${ms(tLaunch, performance.now())} ms`,
        );
      }
    } finally {
      stop = true;
      await Promise.all(clients);
    }

    // Every acknowledged write is there, read linearizably through the leader.
    const reader = new KvClient(c);
    await c.leader();
    const missing: string[] = [];
    for (const [key, value] of acknowledged) {
      let got: string | null | undefined;
      for (let attempt = 0; got === undefined && attempt < 20; attempt++) {
        got = await reader.get(key, 3_000).catch(() => undefined);
      }
      if (got !== value) missing.push(`${key}: expected ${value}, read ${String(got)}`);
    }
    assert.deepEqual(missing, [], `acknowledged writes lost`);
    assert.ok(acknowledged.size > KILLS * 10, `only ${acknowledged.size} acknowledged unique writes`);

    const ops = history.operations();
    console.log(
      `      ${acknowledged.size} unique writes acknowledged; ${ops.length} shared-key operations, ` +
        `${ops.filter((o) => o.return === Infinity).length} with unknown outcome\n      ${phases.join('\n      ')}`,
    );
    const result = checkLinearizable(kvModel, history.operations(), { timeoutMs: 60_000 });
    const bad = result.partitions.filter((p) => p.verdict !== 'ok');
    assert.equal(result.verdict, 'ok', JSON.stringify(bad, null, 1).slice(0, 4000));
  });
});

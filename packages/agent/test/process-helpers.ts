import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createClient, hyperfarmProto, promiseClient, type pb } from '@hyperfarm/api';
import type * as grpc from '@grpc/grpc-js';

const BIN = fileURLToPath(new URL('../src/bin/hyperfarm-agent.ts', import.meta.url));

export interface AgentProcess {
  child: ChildProcess;
  address: string;
  client: ReturnType<typeof agentClient>;
  exited: Promise<number | null>;
}

export function agentClient(address: string) {
  const proto = hyperfarmProto().hyperfarm.v1;
  const raw = createClient(proto.AgentService, address);
  return { raw, p: promiseClient(raw) };
}

/**
 * Starts the real agent program (from source, through tsx) and waits for its ready file: an
 * event the program writes once it serves, not a sleep.
 */
export async function startAgentProcess(
  id: string,
  dataDir: string,
  extraArgs: string[] = [],
): Promise<AgentProcess> {
  const ready = join(dataDir, `..`, `${id}.ready.json`);
  rmSync(ready, { force: true });
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      BIN,
      '--id',
      id,
      '--grpc-address',
      '127.0.0.1:0',
      '--metrics-address',
      '127.0.0.1:0',
      '--data-dir',
      dataDir,
      '--ready-file',
      ready,
      '--log-level',
      'warn',
      ...extraArgs,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const address = await new Promise<string>((resolve, reject) => {
    const onExit = () => reject(new Error(`agent ${id} exited before it was ready: ${stderr}`));
    child.once('exit', onExit);
    const poll = () => {
      if (existsSync(ready)) {
        child.off('exit', onExit);
        resolve((JSON.parse(readFileSync(ready, 'utf8')) as { grpcAddress: string }).grpcAddress);
      } else setTimeout(poll, 25);
    };
    poll();
  });
  return { child, address, client: agentClient(address), exited };
}

/** Collects a server stream's messages until it ends. */
export function collect<T>(stream: grpc.ClientReadableStream<T>): Promise<T[]> {
  return new Promise((resolve, reject) => {
    const out: T[] = [];
    stream.on('data', (m: T) => out.push(m));
    stream.on('error', reject);
    stream.on('end', () => resolve(out));
  });
}

/** Polls `check` every 20 ms until it returns true, failing with `what` after `timeoutMs`. */
export async function waitUntil(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Polls GetVm until the VM reaches `state` (the agent runs on real time). */
export async function waitForState(
  client: AgentProcess['client'],
  vmId: string,
  state: pb.VmState__Output,
  timeoutMs = 10_000,
): Promise<pb.Vm__Output> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const vm = await client.p.getVm({ vmId });
    if (vm.status!.state === state) return vm;
    if (Date.now() > deadline) throw new Error(`VM ${vmId} is ${vm.status!.state}, expected ${state}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * For a mocha suite of real agent processes: a fresh folder per test, and every agent started
 * through `start` killed (SIGKILL) and its folder removed after the test.
 */
export function useAgentProcesses(tag: string): {
  dir: () => string;
  start: (id: string, args?: string[]) => Promise<AgentProcess>;
} {
  let dir = '';
  const running: AgentProcess[] = [];
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), `hf-agent-${tag}-`));
  });
  afterEach(async () => {
    for (const a of running.splice(0)) {
      a.client.raw.close();
      if (a.child.exitCode === null) {
        a.child.kill('SIGKILL');
        await a.exited;
      }
    }
    rmSync(dir, { recursive: true, force: true });
  });
  return {
    dir: () => dir,
    start: async (id, args = []) => {
      const a = await startAgentProcess(id, join(dir, id), args);
      running.push(a);
      return a;
    },
  };
}

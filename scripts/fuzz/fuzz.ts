/**
 * The request fuzzer: sends `count` requests, drawn with `seed` from the proto descriptors, to
 * every RPC of a fresh farm's daemon and agent, and checks each answer and the host around them:
 * - no INTERNAL (nor UNKNOWN): every failure is one the API documents;
 * - no crash: both programs are still running after every request;
 * - no file created, changed or removed in the sandbox outside the programs' own folders;
 * - every INVALID_ARGUMENT names a field of the request in its field trailer.
 */
import * as grpc from '@grpc/grpc-js';
import type protobuf from 'protobufjs';
import { call, type Outcome } from './rpc.js';
import { Random } from './random.js';
import { changes, filesOutside, startSandbox, tail, removeSandbox, type Sandbox } from './sandbox.js';
import { namesField, protoSchema, rpcsOf, type Rpc } from './schema.js';
import { Generator, Known } from './values.js';

/** Which program serves each service. */
const SERVED_BY = {
  agent: ['AgentService', 'MigrationService', 'NetworkService', 'TunnelService'],
  daemon: ['ClusterService', 'RaftService'],
} as const;

/**
 * RPCs that change who serves: membership, leadership, hosts, Raft's peer messages. A valid one
 * (a member added at a random address, a message from a higher term) rightly leaves the farm
 * without quorum, or without its host, for the rest of the run. They get the last part of the
 * run, so everything else meets a working farm.
 */
const DISRUPTIVE = new Set([
  'ClusterService.AddMember',
  'ClusterService.PromoteMember',
  'ClusterService.RemoveMember',
  'ClusterService.TransferLeadership',
  'ClusterService.RemoveHost',
  'RaftService.Send',
  'RaftService.InstallSnapshot',
]);

/** The share of a run given to the disruptive RPCs, at its end. */
const DISRUPTIVE_SHARE = 0.15;

export interface FuzzOptions {
  seed: number;
  count: number;
  /** Only RPCs whose name ("AgentService.CreateVm") contains one of these. */
  only?: string[];
  /** Progress lines go here. */
  log?: (line: string) => void;
  /** Keep the sandbox (logs, data) after the run, for a look at a failure. */
  keep?: boolean;
}

export interface Failure {
  index: number;
  rpc: string;
  problem: string;
  request: string;
  answer: string;
}

export interface FuzzReport {
  seed: number;
  sent: number;
  /** Requests per status code name. */
  codes: Record<string, number>;
  /** Requests per RPC and status code name: which RPCs the run reached past their checks. */
  byRpc: Record<string, Record<string, number>>;
  /** The first message seen per RPC and status code name. */
  samples: Record<string, Record<string, string>>;
  failures: Failure[];
  sandbox: string;
}

/** A request as printed in a failure: long strings cut, bytes in base64. */
export function printable(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => {
    if (typeof v === 'string' && v.length > 120) return `${v.slice(0, 120)}…(${v.length} chars)`;
    if (v instanceof Uint8Array) return `base64:${Buffer.from(v).toString('base64').slice(0, 120)}`;
    if (typeof v === 'number' && !Number.isFinite(v)) return String(v);
    return v;
  });
}

const MIB = 1024 * 1024;

/** Gives the fuzz something to find: VMs on the agent and through the daemon, a snapshot. */
async function seedFarm(
  send: (rpc: string, request: Record<string, unknown>) => Promise<Outcome>,
  known: Known,
): Promise<void> {
  const must = async (rpc: string, request: Record<string, unknown>) => {
    const outcome = await send(rpc, request);
    if (outcome.code !== grpc.status.OK) throw new Error(`setting up: ${rpc} failed: ${outcome.details}`);
    return outcome;
  };
  const catalog = await must('AgentService.ListGuestOs', {});
  const ids = ((catalog.answers[0] as { guest_os?: { id: string }[] })?.guest_os ?? []).map((g) => g.id);
  for (const id of ids) known.add('guest_os', id);
  const guestOs = ids.find((id) => id.includes('2008')) ?? ids[0] ?? '';
  const config = (name: string) => ({
    name,
    processor: { count: 1 },
    memory_bytes: 64 * MIB,
    guest_os: guestOs,
    integration_services: true,
  });
  for (const name of ['fuzz-off', 'fuzz-running'])
    await must('AgentService.CreateVm', { vm_id: name, config: config(name) });
  await must('AgentService.ChangeVmState', { vm_id: 'fuzz-running', action: 'VM_ACTION_START' });
  await must('AgentService.CreateCheckpoint', { vm_id: 'fuzz-off', name: 'fuzz-snap' });
  // The daemon places VMs once the agent's host has registered and is Up.
  const deadline = Date.now() + 30_000;
  const hostUp = (o: Outcome) =>
    ((o.answers[0] as { hosts?: { state: string }[] })?.hosts ?? []).some((h) => h.state === 'HOST_STATE_UP');
  while (!hostUp(await send('ClusterService.ListHosts', {}))) {
    if (Date.now() > deadline) throw new Error('setting up: the agent did not register with the daemon');
    await new Promise((r) => setTimeout(r, 100));
  }
  await must('ClusterService.CreateVm', { config: config('fuzz-placed'), start: true });
}

export async function fuzz(options: FuzzOptions): Promise<FuzzReport> {
  const log = options.log ?? (() => {});
  const root = protoSchema();
  const rpcs = rpcsOf([...SERVED_BY.agent, ...SERVED_BY.daemon]).filter(
    (r) => !options.only || options.only.some((o) => r.name.includes(o)),
  );
  if (rpcs.length === 0) throw new Error(`no RPC matches ${options.only?.join(', ')}`);
  const sandbox = await startSandbox();
  const clients = {
    agent: new grpc.Client(sandbox.agent.address, grpc.credentials.createInsecure()),
    daemon: new grpc.Client(sandbox.daemon.address, grpc.credentials.createInsecure()),
  };
  const clientFor = (rpc: Rpc) =>
    (SERVED_BY.agent as readonly string[]).includes(rpc.name.split('.')[0]!) ? clients.agent : clients.daemon;
  const responseType = (rpc: Rpc): protobuf.Type =>
    root.lookupType(
      root.lookupService(`hyperfarm.v1.${rpc.name.split('.')[0]}`).methods[rpc.name.split('.')[1]!]!
        .responseType,
    );
  const encode = (type: protobuf.Type, obj: Record<string, unknown>) =>
    type.encode(type.fromObject(obj)).finish();
  const deadlineOf = (rpc: Rpc) => (rpc.responseStream ? 1_000 : 3_000);

  const known = new Known();
  const rng = new Random(options.seed);
  const gen = new Generator(rng, known, { outside: sandbox.outside, maxUp: sandbox.maxUp });
  const report: FuzzReport = {
    seed: options.seed,
    sent: 0,
    codes: {},
    byRpc: {},
    samples: {},
    failures: [],
    sandbox: sandbox.dir,
  };
  try {
    const all = rpcsOf([...SERVED_BY.agent, ...SERVED_BY.daemon]);
    await seedFarm(async (name, request) => {
      const rpc = all.find((r) => r.name === name)!;
      const outcome = await call(
        clientFor(rpc),
        rpc,
        responseType(rpc),
        [encode(rpc.request, request)],
        10_000,
      );
      known.learn(outcome.answers);
      return outcome;
    }, known);

    const calm = rpcs.filter((r) => !DISRUPTIVE.has(r.name));
    const disruptive = rpcs.filter((r) => DISRUPTIVE.has(r.name));
    const disruptivePhase = (index: number) => index >= options.count * (1 - DISRUPTIVE_SHARE);
    let files = filesOutside(sandbox);
    for (let index = 0; index < options.count; index++) {
      const rpc = rng.pick(
        disruptivePhase(index) && disruptive.length > 0 ? disruptive : calm.length > 0 ? calm : rpcs,
      );
      const requests = Array.from({ length: rpc.requestStream ? 1 + rng.below(3) : 1 }, () =>
        gen.request(rpc.request),
      );
      let messages: Uint8Array[];
      try {
        messages = requests.map((r) => encode(rpc.request, r));
      } catch {
        continue; // A value protobufjs cannot put on the wire: no request to send.
      }
      const outcome = await call(clientFor(rpc), rpc, responseType(rpc), messages, deadlineOf(rpc));
      report.sent++;
      const codeName = grpc.status[outcome.code] ?? String(outcome.code);
      report.codes[codeName] = (report.codes[codeName] ?? 0) + 1;
      const perRpc = (report.byRpc[rpc.name] ??= {});
      perRpc[codeName] = (perRpc[codeName] ?? 0) + 1;
      (report.samples[rpc.name] ??= {})[codeName] ??= outcome.details.slice(0, 200);
      const fail = (problem: string) => {
        const failure = {
          index,
          rpc: rpc.name,
          problem,
          request: printable(rpc.requestStream ? requests : requests[0]),
          answer: `${codeName}${outcome.field ? ` field=${outcome.field}` : ''}: ${outcome.details.slice(0, 300)}`,
        };
        report.failures.push(failure);
        log(
          `FAIL #${index} ${rpc.name}: ${problem}\n  request: ${failure.request.slice(0, 2000)}\n  answer: ${failure.answer}`,
        );
      };
      if (outcome.code === grpc.status.INTERNAL || outcome.code === grpc.status.UNKNOWN)
        fail(`answered ${codeName}`);
      if (outcome.code === grpc.status.INVALID_ARGUMENT && !namesField(rpc.request, outcome.field))
        fail(
          `INVALID_ARGUMENT without a field of ${rpc.request.name} in its trailer (got '${outcome.field}')`,
        );
      const now = filesOutside(sandbox);
      const changed = changes(files, now);
      if (changed.length > 0)
        fail(`changed files outside the data folders: ${changed.slice(0, 10).join(', ')}`);
      files = now;
      const dead = [sandbox.agent, sandbox.daemon].find(
        (p) => p.child.exitCode !== null || p.child.signalCode !== null,
      );
      if (dead) {
        // Give the log a moment to be flushed by the dead process's pipe before reading it.
        await new Promise((r) => setImmediate(r));
        fail(
          `${dead.id} crashed (${dead.child.exitCode ?? dead.child.signalCode}); its log ends:\n${tail(dead.log)}`,
        );
        break;
      }
      if (outcome.code === grpc.status.OK) known.learn(outcome.answers);
      if ((index + 1) % 100 === 0)
        log(`${index + 1}/${options.count} requests, ${report.failures.length} failures`);
    }
  } finally {
    clients.agent.close();
    clients.daemon.close();
    await stopAndClean(sandbox, options.keep === true || report.failures.length > 0);
  }
  return report;
}

async function stopAndClean(sandbox: Sandbox, keep: boolean): Promise<void> {
  await sandbox.stop();
  if (!keep) removeSandbox(sandbox);
}

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  createClient,
  GUEST_EXECUTES,
  hyperfarmProto,
  promiseClient,
  status,
  statusOf,
  type pb,
} from '@hyperfarm/api';

/**
 * What the fault tests of migration stand on: real agent processes (the built program), a
 * coordinator that plays the daemon's part (it records the handover decision, then carries it
 * out until both hosts have acknowledged it), and a checker that follows every agent's own event
 * stream and fails the moment one VM runs on two hosts.
 */

const BIN = fileURLToPath(new URL('../dist/bin/hyperfarm-agent.js', import.meta.url));

export type AgentClient = ReturnType<typeof promiseClient<pb.AgentServiceClient>>;

/** One agent process, restartable on its data folder (it gets a new port each time). */
export class AgentProc {
  child!: ChildProcess;
  address = '';
  c!: AgentClient;
  raw!: pb.AgentServiceClient;
  private exited!: Promise<void>;

  constructor(
    readonly id: string,
    private readonly dir: string,
    private readonly args: string[],
  ) {}

  async start(): Promise<void> {
    const ready = join(this.dir, `${this.id}.ready.json`);
    rmSync(ready, { force: true });
    this.child = spawn(
      process.execPath,
      [
        BIN,
        '--id',
        this.id,
        '--grpc-address',
        '127.0.0.1:0',
        '--metrics-address',
        '127.0.0.1:0',
        '--data-dir',
        join(this.dir, this.id),
        '--ready-file',
        ready,
        '--log-level',
        'error',
        ...this.args,
      ],
      { stdio: ['ignore', 'ignore', 'inherit'] },
    );
    this.exited = new Promise((r) => this.child.once('exit', () => r()));
    await until(`${this.id} ready`, 20_000, () => existsSync(ready) || undefined);
    this.address = (JSON.parse(readFileSync(ready, 'utf8')) as { grpcAddress: string }).grpcAddress;
    this.raw?.close();
    this.raw = createClient(hyperfarmProto().hyperfarm.v1.AgentService, this.address);
    this.c = promiseClient(this.raw);
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  async kill(): Promise<void> {
    if (!this.alive) return;
    this.child.kill('SIGKILL');
    await this.exited;
  }

  stop(): void {
    this.child.kill('SIGSTOP');
  }

  cont(): void {
    this.child.kill('SIGCONT');
  }

  async close(): Promise<void> {
    this.cont();
    await this.kill();
    this.raw?.close();
  }
}

/** Polls `check` until it returns a value (never a sleep standing in for a condition). */
export async function until<T>(
  what: string,
  ms: number,
  check: () => Promise<T | undefined> | T | undefined,
) {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v as T;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * Follows each agent's WatchEvents (with the initial state, again after each restart) and keeps,
 * per VM, the hosts where it runs now. An agent that is killed runs nothing from then on; one
 * that is frozen (SIGSTOP) still counts as running what it ran: the checker is conservative.
 */
export class RunChecker {
  readonly violations: string[] = [];
  private readonly running = new Map<string, Set<string>>();
  private readonly streams = new Map<string, { cancel(): void }>();

  follow(a: AgentProc): void {
    this.forgetHost(a.id);
    const call = a.raw.watchEvents({ initialState: true });
    call.on('data', (e: pb.AgentEvent__Output) => this.seen(a.id, e));
    call.on('error', () => undefined);
    this.streams.set(a.id, call);
  }

  /** The agent died: it runs nothing. */
  forgetHost(hostId: string): void {
    this.streams.get(hostId)?.cancel();
    this.streams.delete(hostId);
    for (const hosts of this.running.values()) hosts.delete(hostId);
  }

  private seen(hostId: string, e: pb.AgentEvent__Output): void {
    if (!e.vmId) return;
    let hosts = this.running.get(e.vmId);
    if (!hosts) this.running.set(e.vmId, (hosts = new Set()));
    const state = e.vm?.status?.state;
    if (e.type !== 'deleted' && state && GUEST_EXECUTES.has(state)) hosts.add(hostId);
    else hosts.delete(hostId);
    if (hosts.size > 1)
      this.violations.push(`VM ${e.vmId} runs on ${[...hosts].join(' and ')} (${e.type}: ${e.message})`);
  }

  hostsRunning(vmId: string): string[] {
    return [...(this.running.get(vmId) ?? [])];
  }

  close(): void {
    for (const s of this.streams.values()) s.cancel();
  }
}

export type Decision = 'commit' | 'abort';

export interface MigrationPlan {
  id: string;
  vmId: string;
  source: AgentProc;
  target: AgentProc;
  sourceGeneration: number;
  kind: pb.MigrationKind;
  /** The pull's deadline: a frozen source or target is given up after half of it. */
  deadlineMs: number;
  holdMs: number;
}

/** Where a fault is injected, in the order a migration passes them. */
export type Step = 'transfer' | 'stop-copy' | 'prepared' | 'commit-target' | 'commit-source';

/**
 * Plays the daemon: the decision is recorded (here, in `log`, which survives a "leader" kill)
 * before anyone is told; it is commit only once the target held the VM whole (PREPARED), abort
 * otherwise. The decision is then told until each host has acknowledged it. A new coordinator
 * started on the same log finishes what the last one left.
 */
export class Coordinator {
  constructor(
    readonly log: Map<string, Decision>,
    private readonly onStep: (step: Step) => Promise<void> | void = () => undefined,
  ) {}

  async run(p: MigrationPlan): Promise<Decision> {
    const prepared = await this.pull(p);
    await this.onStep('prepared');
    if (!this.log.has(p.id)) this.log.set(p.id, prepared ? 'commit' : 'abort');
    return this.finish(p);
  }

  /** MigrateIn: true once the target holds the VM whole. */
  private async pull(p: MigrationPlan): Promise<boolean> {
    let stopCopy = false;
    let transfer = false;
    try {
      await new Promise<void>((resolve, reject) => {
        const call = p.target.raw.migrateIn(
          {
            migrationId: p.id,
            vmId: p.vmId,
            sourceAddress: p.source.address,
            sourceGeneration: p.sourceGeneration,
            targetGeneration: p.sourceGeneration + 1,
            kind: p.kind,
            deadlineMs: p.deadlineMs,
            holdMs: p.holdMs,
          },
          { deadline: Date.now() + p.deadlineMs * 3 },
        );
        call.on('data', (m: pb.MigrationProgress__Output) => {
          if (m.phase === 'MIGRATION_PHASE_TRANSFERRING' && !transfer) {
            transfer = true;
            void Promise.resolve(this.onStep('transfer')).catch(reject);
          }
          if (m.phase === 'MIGRATION_PHASE_STOP_AND_COPY' && !stopCopy) {
            stopCopy = true;
            void Promise.resolve(this.onStep('stop-copy')).catch(reject);
          }
        });
        call.on('error', reject);
        call.on('end', () => resolve());
      });
      return true;
    } catch (err) {
      if (statusOf(err) === undefined) throw err; // not the target's answer: the coordinator's end
      return false;
    }
  }

  /** Tells the recorded decision until both hosts acknowledged it; returns it. */
  async finish(p: MigrationPlan): Promise<Decision> {
    const decision = this.log.get(p.id) ?? (await this.decideFromTarget(p));
    const req = { migrationId: p.id, vmId: p.vmId, targetGeneration: p.sourceGeneration + 1, reason: 'test' };
    if (decision === 'commit') {
      await this.onStep('commit-target');
      const ran = await tell(
        () => p.target.c.commitMigration({ ...req, role: 'MIGRATION_ROLE_TARGET' }, { timeoutMs: 1_000 }),
        p,
      );
      if (ran === 'refused') {
        // The target holds nothing and never ran the VM: it can no longer run it. The VM stays
        // on its source (the daemon records this fallback under a newer generation).
        this.log.set(p.id, 'abort');
        await tell(
          () => p.source.c.abortMigration({ ...req, role: 'MIGRATION_ROLE_SOURCE' }, { timeoutMs: 1_000 }),
          p,
        );
        return 'abort';
      }
      await this.onStep('commit-source');
      await tell(
        () => p.source.c.commitMigration({ ...req, role: 'MIGRATION_ROLE_SOURCE' }, { timeoutMs: 1_000 }),
        p,
      );
      return 'commit';
    }
    // The target never runs an import that was not committed: the source may resume at once.
    await tell(
      () => p.target.c.abortMigration({ ...req, role: 'MIGRATION_ROLE_TARGET' }, { timeoutMs: 1_000 }),
      p,
    );
    await tell(
      () => p.source.c.abortMigration({ ...req, role: 'MIGRATION_ROLE_SOURCE' }, { timeoutMs: 1_000 }),
      p,
    );
    return 'abort';
  }

  /** A new coordinator with no decision recorded: the target says whether it holds the VM. */
  private async decideFromTarget(p: MigrationPlan): Promise<Decision> {
    const s = await until('the target to answer', 60_000, () =>
      p.target.c
        .getMigrationStatus({ migrationId: p.id }, { timeoutMs: 1_000 })
        .then((x) => (x.stage === 'MIGRATION_STAGE_TRANSFERRING' ? undefined : x)),
    );
    const d: Decision = s.stage === 'MIGRATION_STAGE_PREPARED' ? 'commit' : 'abort';
    this.log.set(p.id, d);
    return d;
  }
}

/**
 * Calls until the host answers: 'done' when it did what was asked, 'refused' when it refused for
 * good (FAILED_PRECONDITION: a target holding nothing). A host down or frozen is asked again.
 */
async function tell(call: () => Promise<unknown>, p: MigrationPlan): Promise<'done' | 'refused'> {
  return until(`an answer for ${p.id}`, 90_000, async () => {
    try {
      await call();
      return 'done' as const;
    } catch (err) {
      if (statusOf(err) === status.FAILED_PRECONDITION) return 'refused' as const;
      throw err;
    }
  });
}

/**
 * What every drill runner does the same way, whatever farm it plays on: the timeline's order
 * (each step recorded as it starts and ends, the first failure ends it), the steps that only
 * wait or write (hold, wait, assert, writes), the background writer and the conditions. The
 * runner of real processes (runner.ts) and the farm simulator's (@hyperfarm/sim) differ only in
 * the farm they reach: its clock, its steps, and a probe of what it reports.
 */
import { ms, type Plan } from './format.js';
import { EXECUTING, type Observation } from './observations.js';
import type { Condition, Step, StepKind } from './types.js';

/** A runner's clock (ms since the run began) and its record. */
export interface RunClock {
  now(): number;
  sleep(ms: number): Promise<void>;
  record(o: Observation): void;
  onStep?: (line: string) => void;
}

/** What the conditions ask of the farm; hosts and VMs by the drill's names. */
export interface FarmProbe {
  /** The VMs as the daemons report them. */
  vms(): Promise<{ id: string; name: string; state: string; host: string }[]>;
  /** Each host's state as the daemons report it, by name. */
  hostStates(): Promise<Map<string, string>>;
  hostNames(): string[];
  /** Whether the host's own agent runs this VM now. */
  agentRuns(host: string, vmId: string): Promise<boolean>;
  /** What the host's own agent has: names and states. */
  agentVms(host: string): Promise<{ name: string; state: string }[]>;
  /** The leader every live daemon names, '' when none is agreed on. */
  leader(): Promise<string>;
  /** The VMs (by name) with a migration neither completed nor failed. */
  migrating(): Promise<string[]>;
}

/** Polls `check` until it answers true; fails with its last answer after `within` ms. */
export async function until(
  clock: RunClock,
  what: string,
  within: number,
  check: () => Promise<true | string> | true | string,
): Promise<void> {
  const end = clock.now() + within;
  let last = 'not checked yet';
  for (;;) {
    try {
      const r = await check();
      if (r === true) return;
      last = r;
    } catch (err) {
      last = (err as Error).message;
    }
    if (clock.now() > end) throw new Error(`${what}: not within ${(within / 1000).toFixed(1)} s (${last})`);
    await clock.sleep(100);
  }
}

/**
 * The background writer: `concurrency` writers create records (w-1, w-2...) until stopped or
 * `limit`. A write is acknowledged when `create` resolves (its operation completed).
 */
export class Writer {
  private state: { stop: boolean; done: Promise<void> } | undefined;
  count = 0;

  constructor(
    private readonly plan: Plan,
    private readonly clock: RunClock,
    private readonly create: (name: string) => Promise<void>,
  ) {}

  start(): void {
    if (this.state && !this.state.stop) return;
    const w = this.plan.writes!;
    const state = { stop: false, done: Promise.resolve() };
    const one = async () => {
      while (!state.stop && (w.limit === undefined || this.count < w.limit)) {
        const name = `w-${++this.count}`;
        try {
          await this.create(name);
          this.clock.record({ t: this.clock.now(), type: 'write', name, ok: true });
        } catch (err) {
          const error = (err as Error).message;
          this.clock.record({ t: this.clock.now(), type: 'write', name, ok: false, error });
          await this.clock.sleep(100);
        }
      }
    };
    state.done = Promise.all(Array.from({ length: w.concurrency }, one)).then(() => undefined);
    this.state = state;
  }

  async stop(): Promise<void> {
    if (!this.state) return;
    this.state.stop = true;
    await this.state.done;
  }
}

/**
 * Plays the timeline: each step recorded as it starts and ends (with its detail or error), the
 * first failure ends it. `play` carries out the steps that act on the farm; the ones that only
 * wait or write are played here.
 */
export async function playTimeline(
  plan: Plan,
  clock: RunClock,
  probe: FarmProbe,
  writer: Writer,
  play: (step: Step, kind: StepKind) => Promise<string | undefined>,
): Promise<void> {
  const common = async (step: Step, kind: StepKind): Promise<string | undefined> => {
    switch (kind) {
      case 'writes':
        if (step.writes === 'start') writer.start();
        else await writer.stop();
        return `${writer.count} writes so far`;
      case 'hold':
        await clock.sleep(ms(step.hold!));
        return undefined;
      case 'wait': {
        const { within, ...cond } = step.wait!;
        const start = clock.now();
        await until(clock, describe(cond), ms(within), () => checkCondition(plan, probe, cond));
        return `held after ${((clock.now() - start) / 1000).toFixed(1)} s`;
      }
      case 'assert': {
        const r = await checkCondition(plan, probe, step.assert!);
        if (r !== true) throw new Error(`${describe(step.assert!)}: ${r}`);
        return undefined;
      }
      default:
        return play(step, kind);
    }
  };
  for (const s of plan.steps) {
    clock.record({
      t: clock.now(),
      type: 'step-start',
      index: s.index,
      kind: s.kind,
      ...(s.label ? { label: s.label } : {}),
    });
    clock.onStep?.(`step ${s.index + 1}: ${s.kind}${s.label ? ` [${s.label}]` : ''} (line ${s.line})`);
    try {
      const detail = await common(s.step, s.kind);
      clock.record({
        t: clock.now(),
        type: 'step-end',
        index: s.index,
        ok: true,
        ...(detail ? { detail } : {}),
      });
      if (detail) clock.onStep?.(`  ${detail}`);
    } catch (err) {
      const error = (err as Error).message;
      clock.record({ t: clock.now(), type: 'step-end', index: s.index, ok: false, error });
      clock.onStep?.(`  failed: ${error}`);
      break;
    }
  }
}

/** True when the condition holds, else why not. */
export async function checkCondition(plan: Plan, probe: FarmProbe, c: Condition): Promise<true | string> {
  const problems: string[] = [];
  const vmsNeeded = c.vmsRunning || c.hostEmpty || c.vmOn || c.vmNotOn;
  const vms = vmsNeeded ? await probe.vms() : [];
  const byName = new Map(vms.map((v) => [v.name, v]));
  const where = (n: string) => {
    const v = byName.get(n);
    return v ? `${v.state.replace('VM_STATE_', '')} on ${v.host || 'no host'}` : 'missing';
  };
  if (c.vmsRunning)
    for (const n of c.vmsRunning === 'all' ? plan.vms.map((v) => v.name) : c.vmsRunning) {
      const v = byName.get(n);
      if (v?.state !== 'VM_STATE_RUNNING') problems.push(`${n} is ${where(n)}`);
      else if (!(await probe.agentRuns(v.host, v.id)))
        problems.push(`${n}: its host's own agent does not run it`);
    }
  if (c.leader && !(await probe.leader())) problems.push('the daemons agree on no leader');
  if (c.hostsUp || c.hostDown) {
    const hosts = await probe.hostStates();
    const state = (n: string) => hosts.get(n) ?? 'missing';
    for (const n of c.hostsUp === 'all' ? probe.hostNames() : (c.hostsUp ?? []))
      if (state(n) !== 'HOST_STATE_UP') problems.push(`${n} is ${state(n)}`);
    if (c.hostDown && state(c.hostDown) !== 'HOST_STATE_DOWN')
      problems.push(`${c.hostDown} is ${state(c.hostDown)}`);
  }
  if (c.hostRunsNothing) {
    const running = (await probe.agentVms(c.hostRunsNothing)).filter((v) => EXECUTING.has(v.state));
    if (running.length)
      problems.push(`${c.hostRunsNothing}'s agent runs ${running.map((v) => v.name).join(', ')}`);
  }
  if (c.hostEmpty) {
    const on = vms.filter((v) => v.host === c.hostEmpty);
    if (on.length) problems.push(`${c.hostEmpty} still has ${on.map((v) => v.name).join(', ')}`);
  }
  if (c.vmOn && byName.get(c.vmOn.vm)?.host !== c.vmOn.host)
    problems.push(`${c.vmOn.vm} is ${where(c.vmOn.vm)}`);
  if (c.vmNotOn && byName.get(c.vmNotOn.vm)?.host === c.vmNotOn.host)
    problems.push(`${c.vmNotOn.vm} is still on ${c.vmNotOn.host}`);
  if (c.migrationsDone) {
    const busy = await probe.migrating();
    if (busy.length) problems.push(`migrating: ${busy.join(', ')}`);
  }
  return problems.length ? problems.join('; ') : true;
}

/** A condition for a person: "web-1, web-2 Running; host-2 Down". */
export function describe(c: Condition): string {
  const parts: string[] = [];
  if (c.vmsRunning) parts.push(`${c.vmsRunning === 'all' ? 'every VM' : c.vmsRunning.join(', ')} Running`);
  if (c.leader) parts.push('a leader');
  if (c.hostsUp) parts.push(`${c.hostsUp === 'all' ? 'every host' : c.hostsUp.join(', ')} Up`);
  if (c.hostDown) parts.push(`${c.hostDown} Down`);
  if (c.hostRunsNothing) parts.push(`${c.hostRunsNothing} runs nothing`);
  if (c.hostEmpty) parts.push(`${c.hostEmpty} empty`);
  if (c.vmOn) parts.push(`${c.vmOn.vm} on ${c.vmOn.host}`);
  if (c.vmNotOn) parts.push(`${c.vmNotOn.vm} not on ${c.vmNotOn.host}`);
  if (c.migrationsDone) parts.push('no migration in progress');
  return parts.join('; ');
}

/**
 * The verdicts: pure functions of a plan and what the run observed. Nothing here talks to the
 * farm or reads a clock, so a recorded run can be judged again (and tests feed it by hand).
 */
import { ms, type Plan } from './format.js';
import { EXECUTING, of, type Observation } from './observations.js';
import type { Expectations, VmSet } from './types.js';

export interface Verdict {
  /** What was expected, for a person: "VMs web-1, web-2 Running within 30 s after 'crash'". */
  expectation: string;
  kind: string;
  /** The drill file's line that states it; 0 for the checks every drill has. */
  line: number;
  ok: boolean;
  /** The figure measured, when there is one ("12.3 s", "4 lost"). */
  measured?: string;
  /** Why it passed or failed, with the margin. */
  reason: string;
}

export interface RunInterval {
  vm: string;
  host: string;
  from: number;
  /** Undefined: still running when the run ended. */
  to?: number;
}

const secs = (t: number) => `${(t / 1000).toFixed(1)} s`;
const at = (t: number | undefined) => (t === undefined ? 'the end' : secs(t));

/**
 * Per VM, the intervals in which each host's own agent ran it, from the agents' event streams.
 * An agent that died runs nothing from its death on; an agent that comes back says what it runs.
 */
export function runIntervals(obs: Observation[]): RunInterval[] {
  const all: RunInterval[] = [];
  const open = new Map<string, RunInterval>();
  const seq = obs
    .filter((o) => o.type === 'agent' || o.type === 'agent-gone')
    .map((o, i) => ({ o, i }))
    .sort((a, b) => a.o.t - b.o.t || a.i - b.i);
  for (const { o } of seq) {
    if (o.type === 'agent-gone') {
      for (const [key, run] of open)
        if (run.host === o.host) {
          run.to = o.t;
          open.delete(key);
        }
      continue;
    }
    if (o.type !== 'agent' || !o.vm) continue;
    const key = `${o.host}\u0000${o.vm}`;
    const runs = o.event !== 'deleted' && EXECUTING.has(o.state);
    const cur = open.get(key);
    if (runs && !cur) {
      const run = { vm: o.vm, host: o.host, from: o.t };
      all.push(run);
      open.set(key, run);
    } else if (!runs && cur) {
      cur.to = o.t;
      open.delete(key);
    }
  }
  return all;
}

/** Every pair of intervals in which one VM ran on two hosts at once. */
export function twoHostViolations(runs: RunInterval[]): string[] {
  const out: string[] = [];
  const end = (r: RunInterval) => r.to ?? Infinity;
  for (let i = 0; i < runs.length; i++)
    for (let j = i + 1; j < runs.length; j++) {
      const a = runs[i]!;
      const b = runs[j]!;
      if (a.vm !== b.vm || a.host === b.host) continue;
      const overlap = Math.min(end(a), end(b)) - Math.max(a.from, b.from);
      if (overlap > 0)
        out.push(
          `VM ${a.vm} ran on ${a.host} [${secs(a.from)}, ${at(a.to)}] and on ${b.host} [${secs(b.from)}, ${at(b.to)}]` +
            (Number.isFinite(overlap) ? `: ${secs(overlap)} at once` : ': both still at the end'),
        );
    }
  return out;
}

export interface Availability {
  vm: string;
  /** The longest time from t0 on that the VM was not running. */
  worstGapMs: number;
  /** When it is not running at the end: since when. */
  downSince?: number;
}

/**
 * For each VM, how long it was not running after t0, from one sweep over the observations. A VM
 * runs at a moment when the daemons report it Running on a host, that host's own agent runs it,
 * and no fault is on that host (an isolated or stalled host's VM does not count).
 */
export function availability(obs: Observation[], vms: string[], t0: number): Availability[] {
  const seq = obs.map((o, i) => ({ o, i })).sort((a, b) => a.o.t - b.o.t || a.i - b.i);
  const daemon = new Map<string, { state: string; host: string }>();
  const agentRuns = new Set<string>();
  const faulted = new Set<string>();
  const result = new Map(vms.map((vm) => [vm, { vm, worstGapMs: 0 } as Availability]));
  const runs = (vm: string) => {
    const d = daemon.get(vm);
    return d?.state === 'VM_STATE_RUNNING' && !faulted.has(d.host) && agentRuns.has(`${d.host}\u0000${vm}`);
  };
  const evaluate = (t: number) => {
    for (const a of result.values()) {
      if (runs(a.vm)) {
        if (a.downSince !== undefined) a.worstGapMs = Math.max(a.worstGapMs, t - a.downSince);
        delete a.downSince;
      } else if (a.downSince === undefined) a.downSince = t;
    }
  };
  let evaluated = false;
  for (let k = 0; k < seq.length; k++) {
    const o = seq[k]!.o;
    if (!evaluated && o.t > t0) {
      evaluate(t0);
      evaluated = true;
    }
    if (o.type === 'vm') daemon.set(o.vm, { state: o.state, host: o.host });
    else if (o.type === 'agent') {
      const key = `${o.host}\u0000${o.vm}`;
      if (o.event !== 'deleted' && EXECUTING.has(o.state)) agentRuns.add(key);
      else agentRuns.delete(key);
    } else if (o.type === 'agent-gone') {
      for (const key of agentRuns) if (key.startsWith(`${o.host}\u0000`)) agentRuns.delete(key);
    } else if (o.type === 'fault' && o.host) {
      if (o.on) faulted.add(o.host);
      else faulted.delete(o.host);
    } else if (o.type === 'fault' && !o.on) faulted.clear();
    // Judge once every observation of this instant is in.
    if (evaluated && seq[k + 1]?.o.t !== o.t) evaluate(o.t);
  }
  if (!evaluated) evaluate(t0);
  return [...result.values()];
}

function stepStart(obs: Observation[], label: string): number | undefined {
  const plan = of(obs, 'step-start').find((s) => s.label === label);
  return plan?.t;
}

const vmNames = (plan: Plan, set: VmSet | undefined): string[] =>
  set === undefined || set === 'all' ? plan.vms.map((v) => v.name) : set;

type Judge<K extends keyof Expectations> = (
  plan: Plan,
  obs: Observation[],
  spec: NonNullable<Expectations[K]>,
) => Omit<Verdict, 'kind' | 'line'>;

const over = (measured: number, limit: number) =>
  measured < limit
    ? `${secs(limit - measured)} under the ${secs(limit)} allowed`
    : `${secs(measured - limit)} over the ${secs(limit)} allowed`;

const JUDGES: { [K in keyof Expectations]-?: Judge<K> } = {
  vmsRunning(plan, obs, e) {
    const vms = vmNames(plan, e.vms);
    const limit = ms(e.within);
    const expectation = `VMs ${vms.join(', ')} never down longer than ${secs(limit)} after '${e.after}'`;
    const t0 = stepStart(obs, e.after);
    if (t0 === undefined) return { expectation, ok: false, reason: `step '${e.after}' never ran` };
    const all = availability(obs, vms, t0);
    const down = all.filter((a) => a.downSince !== undefined);
    if (down.length)
      return {
        expectation,
        ok: false,
        reason: `not Running at the end: ${down.map((a) => `${a.vm} (down since ${secs(a.downSince!)})`).join(', ')}`,
      };
    const worst = all.reduce((a, b) => (b.worstGapMs > a.worstGapMs ? b : a), all[0]!);
    return {
      expectation,
      ok: worst.worstGapMs <= limit,
      measured: secs(worst.worstGapMs),
      reason:
        worst.worstGapMs === 0
          ? 'every VM ran throughout'
          : `longest down: ${worst.vm}, ${secs(worst.worstGapMs)}, ${over(worst.worstGapMs, limit)}`,
    };
  },
  leaderWithin(_plan, obs, e) {
    const limit = ms(e.within);
    const expectation = `a leader within ${secs(limit)} after '${e.after}'`;
    const t0 = stepStart(obs, e.after);
    if (t0 === undefined) return { expectation, ok: false, reason: `step '${e.after}' never ran` };
    // Before and after in the order observed, not by time alone: in the simulator's virtual
    // time the leader the step kills is seen gone in the very millisecond the step began.
    const start = obs.findIndex((o) => o.type === 'step-start' && o.label === e.after);
    const leaders = obs.flatMap((o, i) => (o.type === 'leader' ? [{ ...o, i }] : []));
    const before = leaders.filter((l) => l.i < start).at(-1)?.leader ?? '';
    const next = leaders.find((l) => l.i > start && l.leader && l.leader !== before);
    if (!next)
      return { expectation, ok: false, reason: `no new leader after ${before || 'none'} by the end` };
    const took = next.t - t0;
    return {
      expectation,
      ok: took <= limit,
      measured: secs(took),
      reason: `${next.leader} leads after ${secs(took)} (before: ${before || 'none'}), ${over(took, limit)}`,
    };
  },
  requestsLost(_plan, obs, e) {
    const expectation = `fewer than ${e.below} connections of '${e.traffic}' lost`;
    const last = of(obs, 'traffic')
      .filter((s) => s.name === e.traffic)
      .at(-1);
    if (!last) return { expectation, ok: false, reason: `no figures from traffic run '${e.traffic}'` };
    const lost = last.lost + last.reset;
    return {
      expectation,
      ok: lost < e.below,
      measured: `${lost} lost`,
      reason: `${last.lost} lost and ${last.reset} reset of ${last.started} started (${last.completed} completed); limit ${e.below}`,
    };
  },
  migrationDowntime(_plan, obs, e) {
    const limit = ms(e.below);
    const expectation = `every migration${e.vm ? ` of ${e.vm}` : ''} completed with downtime below ${limit} ms`;
    const byId = new Map<string, Extract<Observation, { type: 'migration' }>>();
    for (const m of of(obs, 'migration')) if (!e.vm || m.vm === e.vm) byId.set(m.id, m);
    const all = [...byId.values()];
    if (all.length === 0)
      return { expectation, ok: false, reason: `no migration${e.vm ? ` of ${e.vm}` : ''} ran` };
    const failed = all.filter((m) => m.phase !== 'MIGRATION_PHASE_COMPLETED');
    if (failed.length)
      return {
        expectation,
        ok: false,
        reason: failed
          .map((m) => `migration ${m.id} of ${m.vm} ended ${m.phase}${m.error ? `: ${m.error}` : ''}`)
          .join('; '),
      };
    const worst = all.reduce((a, b) => (b.downtimeMs > a.downtimeMs ? b : a));
    return {
      expectation,
      ok: worst.downtimeMs < limit,
      measured: `${worst.downtimeMs} ms`,
      reason: `worst downtime ${worst.downtimeMs} ms (${worst.vm}, ${worst.from} to ${worst.to}), ${worst.downtimeMs < limit ? `${limit - worst.downtimeMs} ms under` : `${worst.downtimeMs - limit} ms over`} the ${limit} ms allowed, of ${all.length} migration(s)`,
    };
  },
  fencedWithin(_plan, obs, e) {
    const limit = ms(e.within);
    const expectation = `${e.host} stops its VMs by itself within ${secs(limit)} after '${e.after}'`;
    const t0 = stepStart(obs, e.after);
    if (t0 === undefined) return { expectation, ok: false, reason: `step '${e.after}' never ran` };
    const runs = runIntervals(obs).filter(
      (r) => r.host === e.host && r.from <= t0 && (r.to === undefined || r.to > t0),
    );
    if (runs.length === 0)
      return { expectation, ok: false, reason: `${e.host} ran no VM when '${e.after}' began` };
    const gone = of(obs, 'agent-gone').find((g) => g.host === e.host && g.t > t0);
    const still = runs.filter((r) => r.to === undefined || (gone && r.to >= gone.t));
    if (still.length)
      return {
        expectation,
        ok: false,
        reason: `${e.host} still ran ${still.map((r) => r.vm).join(', ')}${gone ? ' when its agent died' : ' at the end'}`,
      };
    const took = Math.max(...runs.map((r) => r.to!)) - t0;
    return {
      expectation,
      ok: took <= limit,
      measured: secs(took),
      reason: `its last VM stopped after ${secs(took)}, ${over(took, limit)}`,
    };
  },
};

/** Every expectation's verdict, then the checks every drill has, then whether the timeline played. */
export function judge(plan: Plan, obs: Observation[]): Verdict[] {
  const verdicts: Verdict[] = plan.expectations.map(({ kind, spec, line }) => {
    const j = JUDGES[kind] as Judge<typeof kind>;
    return { kind, line, ...j(plan, obs, spec[kind] as never) };
  });
  const violations = twoHostViolations(runIntervals(obs));
  verdicts.push({
    kind: 'oneHost',
    line: 0,
    expectation: "no VM runs on two hosts at once (every agent's own events)",
    ok: violations.length === 0,
    reason: violations.length
      ? violations.join('; ')
      : `${new Set(runIntervals(obs).map((r) => r.vm)).size} VMs watched on every host`,
  });
  const acked = of(obs, 'write').filter((w) => w.ok);
  const final = of(obs, 'final').at(-1);
  const missing = final ? acked.filter((w) => !final.vms.includes(w.name)) : [];
  verdicts.push({
    kind: 'noWriteLost',
    line: 0,
    expectation: 'no acknowledged write is lost',
    ok: final !== undefined && missing.length === 0,
    measured: `${missing.length} lost`,
    reason: !final
      ? "the farm's VMs could not be read at the end"
      : missing.length
        ? `${missing.length} of ${acked.length} acknowledged writes missing: ${missing
            .slice(0, 10)
            .map((w) => w.name)
            .join(', ')}`
        : `all ${acked.length} acknowledged writes present`,
  });
  const ends = of(obs, 'step-end');
  const failed = ends.find((s) => !s.ok);
  const played = ends.length;
  verdicts.push({
    kind: 'timeline',
    line: failed ? (plan.steps[failed.index]?.line ?? 0) : 0,
    expectation: 'every step of the timeline plays',
    ok: !failed && played === plan.steps.length,
    reason: failed
      ? `step ${failed.index + 1} (${plan.steps[failed.index]?.kind}, line ${plan.steps[failed.index]?.line}) failed: ${failed.error}`
      : played < plan.steps.length
        ? `only ${played} of ${plan.steps.length} steps played`
        : `${played} steps played`,
  });
  return verdicts;
}

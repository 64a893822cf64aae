import { byText } from './model.js';
import type { DrillObservation, DrillReport } from './wire.js';

/**
 * A drill report's timeline as the console draws it: pure, from the report's observations. One
 * lane per VM with its states as the daemons reported them (and the host it was on), the steps
 * and faults as marks, the leader's changes. The drill's own HTML page draws what each host's
 * agent ran; the console draws what an operator watching the farm saw.
 */

export interface Segment {
  from: number;
  to: number;
  state: string;
  host: string;
}

export interface Lane {
  vm: string;
  segments: Segment[];
}

export interface Mark {
  t: number;
  text: string;
  kind: 'step' | 'fault' | 'leader';
}

export interface DrillTimeline {
  endMs: number;
  lanes: Lane[];
  marks: Mark[];
}

type Of<K extends DrillObservation['type']> = Extract<DrillObservation, { type: K }>;
const of = <K extends DrillObservation['type']>(obs: DrillObservation[], type: K): Of<K>[] =>
  obs.filter((o): o is Of<K> => o.type === type);

export function drillTimeline(r: DrillReport): DrillTimeline {
  const obs = [...r.observations].sort((a, b) => a.t - b.t);
  const endMs = Math.max(r.durationMs, ...obs.map((o) => o.t), 1);
  const byVm = new Map<string, Segment[]>();
  for (const o of of(obs, 'vm')) {
    let list = byVm.get(o.vm);
    if (!list) byVm.set(o.vm, (list = []));
    const last = list[list.length - 1];
    if (last && last.state === o.state && last.host === o.host) continue;
    if (last) last.to = o.t;
    list.push({ from: o.t, to: endMs, state: o.state, host: o.host });
  }
  const lanes = [...byVm]
    .sort(([a], [b]) => byText(a, b))
    .map(([vm, segments]) => ({ vm, segments: segments.filter((s) => s.to > s.from) }));
  const marks: Mark[] = [
    ...of(obs, 'step-start').map((s) => ({
      t: s.t,
      text: s.label ? `${s.kind} '${s.label}'` : s.kind,
      kind: 'step' as const,
    })),
    ...of(obs, 'fault').map((f) => ({
      t: f.t,
      text: `${f.what}${f.host ? ` ${f.host}` : ''} ${f.on ? 'on' : 'off'}`,
      kind: 'fault' as const,
    })),
    ...of(obs, 'leader')
      .filter((l, i, all) => i === 0 || all[i - 1]!.leader !== l.leader)
      .map((l) => ({ t: l.t, text: `leader ${l.leader || 'none'}`, kind: 'leader' as const })),
  ].sort((a, b) => a.t - b.t);
  return { endMs, lanes, marks };
}

/** VM states as the daemons name them, grouped as the farm view colours them. */
export function stateClass(state: string): string {
  return `state-${state
    .toLowerCase()
    .replace(/^vm_state_/, '')
    .replace(/_/g, '-')}`;
}

import { Ajv, type ErrorObject } from 'ajv';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Document, type Node } from 'yaml';
import { DRILL_SCHEMA, EXPECTATION_KINDS, STEP_KINDS } from './schema.js';
import type { DrillBody, DrillFile, Expectations, ExpectationKind, Step, StepKind } from './types.js';

/** One thing wrong with a drill file, where it is (1-based line and column) and why. */
export interface DrillError {
  line: number;
  column: number;
  /** The JSON path of the value, "/timeline/2/kill-agent". */
  path: string;
  message: string;
}

/** A drill that failed to parse or validate: every error, each with its place. */
export class DrillFileError extends Error {
  constructor(
    readonly file: string,
    readonly errors: DrillError[],
  ) {
    super(errors.map((e) => `${file}:${e.line}:${e.column}: ${e.message}`).join('\n'));
  }
}

/** A drill resolved for one run: VM names expanded, hosts named, durations in ms. */
export interface Plan {
  name: string;
  description: string;
  quick: boolean;
  daemons: number;
  hosts: { name: string; memoryMib: number; cpus: number }[];
  timing: 'fast' | 'default';
  clusterStorage: boolean;
  switches: { name: string; type: 'external' | 'internal' | 'private' }[];
  vms: {
    name: string;
    memoryBytes: number;
    cpus: number;
    ha: 'high' | 'medium' | 'low' | 'none';
    host?: string;
    switch?: string;
    bootMs: number;
  }[];
  nlb: { name: string; vip: string; switch: string; members: string[] }[];
  traffic: { name: string; nlb: string; rate: number; durationMs: number }[];
  writes?: { concurrency: number; limit?: number };
  steps: { index: number; kind: StepKind; label?: string; step: Step; line: number }[];
  expectations: { index: number; kind: ExpectationKind; spec: Expectations; line: number }[];
}

const ajv = new Ajv({ allErrors: true, verbose: true, strict: false });
const validate = ajv.compile(DRILL_SCHEMA);

/** "2s", "500ms", "1.5m" or a number of ms, in ms. The schema has checked the form. */
export function ms(d: string | number): number {
  if (typeof d === 'number') return d;
  const m = /^([0-9]+(?:\.[0-9]+)?)(ms|s|m)$/.exec(d)!;
  return Math.round(Number(m[1]) * { ms: 1, s: 1000, m: 60_000 }[m[2] as 'ms' | 's' | 'm']);
}

/** "256M" or "4G" in MiB. */
export function mib(size: string): number {
  return Number(size.slice(0, -1)) * (size.endsWith('G') ? 1024 : 1);
}

export const stepKind = (s: Step): StepKind => STEP_KINDS.find((k) => k in s)!;
const expectationKind = (e: Expectations): ExpectationKind => EXPECTATION_KINDS.find((k) => k in e)!;

/** JSON Merge Patch (RFC 7386): objects merge key by key, null removes, anything else replaces. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const out: Record<string, unknown> =
    target && typeof target === 'object' && !Array.isArray(target) ? { ...(target as object) } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/**
 * Parses and checks a drill file: YAML syntax, the schema, then the names it refers to, for the
 * drill as written and as `--quick` makes it. Throws DrillFileError with every error found.
 */
export function loadDrill(text: string, file: string, opts: { quick?: boolean } = {}): Plan {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const at = (offset: number) => {
    const p = lines.linePos(offset);
    return { line: p.line, column: p.col };
  };
  const syntax = [...doc.errors, ...doc.warnings].map((e) => ({
    ...at(e.pos[0]),
    path: '',
    message: e.message.split('\n')[0]!,
  }));
  if (syntax.length) throw new DrillFileError(file, syntax);

  const value = doc.toJS() as unknown;
  const place = (path: string) => at(locate(doc, path).offset);
  // In the --quick variant, a value the patch gives is placed in the patch.
  const placeQuick = (path: string) => {
    const q = locate(doc, `/quick${path}`);
    return at(q.exact ? q.offset : locate(doc, path).offset);
  };
  const schemaErrors = (v: unknown) =>
    validate(v) ? [] : explain(validate.errors ?? []).map((e) => ({ ...place(e.path), ...e }));
  let errors: DrillError[] = schemaErrors(value);
  if (errors.length) throw new DrillFileError(file, dedupe(errors));

  const written = value as DrillFile;
  const variants: [boolean, DrillFile][] = [[false, written]];
  if (written.quick) variants.push([true, mergePatch(written, written.quick) as DrillFile]);
  const plans = new Map<boolean, Plan>();
  for (const [quick, drill] of variants) {
    // Errors of the quick variant are placed where its patch says it, else where the drill does.
    const where = (path: string) => ({ ...(quick ? placeQuick(path) : place(path)), path });
    const found = quick ? schemaErrors(drill).map((e) => ({ ...e, ...where(e.path) })) : [];
    const plan = found.length ? undefined : compile(drill, quick);
    if (plan) found.push(...checkNames(drill, plan).map((e) => ({ ...e, ...where(e.path) })));
    for (const e of found) errors.push(quick ? { ...e, message: `with --quick: ${e.message}` } : e);
    if (plan) plans.set(quick, plan);
  }
  errors = dedupe(errors);
  if (errors.length) throw new DrillFileError(file, errors);
  const plan = plans.get(Boolean(opts.quick) && Boolean(written.quick))!;
  for (const s of plan.steps) s.line = place(`/timeline/${s.index}`).line;
  for (const e of plan.expectations) e.line = place(`/expect/${e.index}`).line;
  return { ...plan, quick: Boolean(opts.quick) };
}

function dedupe(errors: DrillError[]): DrillError[] {
  const seen = new Set<string>();
  return errors
    .filter((e) => {
      const key = `${e.line}:${e.column}:${e.message}`;
      return seen.has(key) ? false : (seen.add(key), true);
    })
    .sort((a, b) => a.line - b.line || a.column - b.column);
}

/** The offset of the value (or, for a key that should not be there, the key) at a JSON path. */
function locate(doc: Document, path: string): { offset: number; exact: boolean } {
  const atKey = path.endsWith('#key');
  const segs = path.replace(/#key$/, '').split('/').slice(1);
  const last = segs.at(-1);
  let node: unknown = doc.contents;
  let offset = (node as Node | null)?.range?.[0] ?? 0;
  const inexact = () => ({ offset, exact: false });
  for (const raw of segs) {
    const seg = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === seg);
      if (!pair) return inexact();
      offset = (pair.key as Node).range?.[0] ?? offset;
      // An unknown key's error points at the key itself.
      if (atKey && seg === last) return { offset, exact: true };
      node = pair.value;
      if (isMap(node) || isSeq(node) || isScalar(node)) offset = (node as Node).range?.[0] ?? offset;
      // A key's own place is clearer for a value that is a whole block.
      if (isMap(node) || isSeq(node)) offset = (pair.key as Node).range?.[0] ?? offset;
    } else if (isSeq(node)) {
      node = node.items[Number(seg)];
      if (node === undefined) return inexact();
      offset = (node as Node).range?.[0] ?? offset;
    } else return inexact();
  }
  return { offset, exact: true };
}

const PATTERNS: Record<string, string> = {
  '^[a-z0-9][a-z0-9-]{0,40}$': "a name of lowercase letters, digits and '-' (at most 41)",
  '^[0-9]+(M|G)$': 'a size such as 256M or 4G',
  '^[0-9]{1,3}(\\.[0-9]{1,3}){3}$': 'an IPv4 address such as 10.0.0.100',
  '^[0-9]+(\\.[0-9]+)?(ms|s|m)$': 'a duration such as 500ms, 2s or 1.5m',
};

/** Turns ajv's errors into one readable reason per mistake. */
function explain(errs: ErrorObject[]): { path: string; message: string }[] {
  const out: { path: string; message: string }[] = [];
  const oneOfs = errs.filter((e) => e.keyword === 'oneOf');
  const inBranch = (e: ErrorObject) =>
    oneOfs.some((o) => e !== o && e.schemaPath.startsWith(`${o.schemaPath}/`));
  const unknownKeyAt = new Set(
    errs.filter((e) => e.keyword === 'additionalProperties').map((e) => e.instancePath),
  );
  for (const e of errs) {
    // An unknown key explains why no action was found: say that alone.
    if (e.keyword === 'oneOf' && unknownKeyAt.has(e.instancePath)) continue;
    if (e.keyword === 'oneOf') out.push(...explainOneOf(e, errs));
    else if (!inBranch(e)) out.push(plain(e));
  }
  return out;
}

function plain(e: ErrorObject): { path: string; message: string } {
  const where = e.instancePath;
  switch (e.keyword) {
    case 'additionalProperties': {
      const key = (e.params as { additionalProperty: string }).additionalProperty;
      const known = Object.keys((e.parentSchema as { properties?: object }).properties ?? {});
      const near = known.find((k) => editDistance(k, key) <= 2);
      const hint = near ? `did you mean '${near}'?` : `expected one of: ${known.join(', ')}`;
      return { path: `${where}/${key}#key`, message: `unknown field '${key}' (${hint})` };
    }
    case 'required':
      return {
        path: where,
        message: `missing field '${(e.params as { missingProperty: string }).missingProperty}'`,
      };
    case 'pattern':
      return {
        path: where,
        message: `${JSON.stringify(e.data)} is not ${PATTERNS[(e.params as { pattern: string }).pattern] ?? `of the form ${(e.params as { pattern: string }).pattern}`}`,
      };
    case 'enum':
      return {
        path: where,
        message: `${JSON.stringify(e.data)} is not one of: ${(e.params as { allowedValues: unknown[] }).allowedValues.join(', ')}`,
      };
    case 'const':
      return {
        path: where,
        message: `must be ${JSON.stringify((e.params as { allowedValue: unknown }).allowedValue)}`,
      };
    default:
      return { path: where, message: `${JSON.stringify(e.data)}: ${e.message ?? e.keyword}` };
  }
}

function explainOneOf(o: ErrorObject, errs: ErrorObject[]): { path: string; message: string }[] {
  const branchErrs = errs.filter((e) => e.schemaPath.startsWith(`${o.schemaPath}/`));
  const data = o.data as Record<string, unknown> | null;
  const branches = o.schema as { required?: string[] }[];
  // "exactly one of these keys" (a step's action, an expectation's kind, host or hostOf).
  if (branches.every((b) => b.required && Object.keys(b).length === 1)) {
    const keys = branches.map((b) => b.required![0]!);
    const present = keys.filter((k) => data && typeof data === 'object' && k in data);
    const what =
      o.instancePath.startsWith('/timeline') && o.instancePath.split('/').length === 3
        ? 'a step'
        : o.instancePath.startsWith('/expect')
          ? 'an expectation'
          : 'this';
    return [
      {
        path: o.instancePath,
        message:
          present.length === 0
            ? `${what} needs one of: ${keys.join(', ')}`
            : `${what} takes one of ${keys.length > 4 ? 'its kinds' : keys.join(', ')}, not several: ${present.join(' and ')}`,
      },
    ];
  }
  // Either form of a value (a list or "all", a string or a number): the deepest mistake says
  // most; otherwise what the value should be.
  const deeper = branchErrs.filter(
    (e) => e.instancePath.length > o.instancePath.length && e.keyword !== 'oneOf',
  );
  if (deeper.length) return deeper.map(plain);
  const description = (o.parentSchema as { description?: string }).description;
  return [{ path: o.instancePath, message: `${JSON.stringify(o.data)} is not ${description ?? 'valid'}` }];
}

/** Resolves a drill that passed the schema into a plan. Pure. */
export function compile(d: DrillFile, quick: boolean): Plan {
  const cap = d.farm.capacity ?? {};
  const hosts = (
    typeof d.farm.hosts === 'number'
      ? Array.from({ length: d.farm.hosts }, (_, i) => ({ name: `host-${i + 1}` }))
      : d.farm.hosts
  ).map((h: { name: string; memory?: string; cpus?: number }) => ({
    name: h.name,
    memoryMib: mib(h.memory ?? cap.memory ?? '32G'),
    cpus: h.cpus ?? cap.cpus ?? 8,
  }));
  const w = d.workload ?? {};
  const vms = (w.vms ?? []).flatMap((v) =>
    (v.count ? Array.from({ length: v.count }, (_, i) => `${v.name}-${i + 1}`) : [v.name]).map((name) => ({
      name,
      memoryBytes: mib(v.memory ?? '64M') * 1024 * 1024,
      cpus: v.cpus ?? 1,
      ha: v.ha ?? 'medium',
      ...(v.host ? { host: v.host } : {}),
      ...(v.switch ? { switch: v.switch } : {}),
      bootMs: v.bootMs ?? 200,
    })),
  );
  return {
    name: d.name,
    description: d.description ?? '',
    quick,
    daemons: d.farm.daemons,
    hosts,
    timing: d.farm.timing ?? 'default',
    clusterStorage: d.farm.clusterStorage ?? true,
    switches: (d.farm.switches ?? []).map((s) => ({ name: s.name, type: s.type ?? 'external' })),
    vms,
    nlb: w.nlb ?? [],
    traffic: (w.traffic ?? []).map((t) => ({ ...t, durationMs: ms(t.duration) })),
    ...(w.writes ? { writes: { concurrency: w.writes.concurrency ?? 2, limit: w.writes.limit } } : {}),
    steps: d.timeline.map((step, index) => ({
      index,
      kind: stepKind(step),
      ...(step.label ? { label: step.label } : {}),
      step,
      line: 0,
    })),
    expectations: (d.expect ?? []).map((spec, index) => ({
      index,
      kind: expectationKind(spec),
      spec,
      line: 0,
    })),
  };
}

/** Every name a drill uses must be one it defines. */
function checkNames(d: DrillBody, p: Plan): { path: string; message: string }[] {
  const errs: { path: string; message: string }[] = [];
  const vms = new Set(p.vms.map((v) => v.name));
  const hosts = new Set(p.hosts.map((h) => h.name));
  const daemons = new Set(Array.from({ length: p.daemons }, (_, i) => `daemon-${i + 1}`));
  const switches = new Set(p.switches.map((s) => s.name));
  const traffic = new Set(p.traffic.map((t) => t.name));
  const nlbs = new Set(p.nlb.map((n) => n.name));
  const labels = new Map<string, number>();
  const need = (set: Set<string>, what: string, name: unknown, path: string) => {
    if (typeof name === 'string' && !set.has(name))
      errs.push({
        path,
        message: `no ${what} named '${name}' (the drill has: ${[...set].join(', ') || 'none'})`,
      });
  };
  const dup = (names: string[], what: string, path: string) => {
    const seen = new Set<string>();
    for (const n of names) {
      if (seen.has(n)) errs.push({ path, message: `two ${what}s are named '${n}'` });
      seen.add(n);
    }
  };
  dup(
    p.hosts.map((h) => h.name),
    'host',
    '/farm/hosts',
  );
  dup(
    p.vms.map((v) => v.name),
    'VM',
    '/workload/vms',
  );
  (d.workload?.vms ?? []).forEach((v, i) => {
    need(hosts, 'host', v.host, `/workload/vms/${i}/host`);
    need(switches, 'switch', v.switch, `/workload/vms/${i}/switch`);
  });
  (d.workload?.nlb ?? []).forEach((n, i) => {
    need(switches, 'switch', n.switch, `/workload/nlb/${i}/switch`);
    n.members.forEach((m, j) => need(vms, 'VM', m, `/workload/nlb/${i}/members/${j}`));
  });
  (d.workload?.traffic ?? []).forEach((t, i) =>
    need(nlbs, 'NLB cluster', t.nlb, `/workload/traffic/${i}/nlb`),
  );
  const vmList = (v: unknown, path: string) => {
    if (Array.isArray(v)) v.forEach((n, j) => need(vms, 'VM', n, `${path}/${j}`));
  };
  const hostRef = (r: { host?: string; hostOf?: string } | undefined | null, path: string) => {
    need(hosts, 'host', r?.host, `${path}/host`);
    need(vms, 'VM', r?.hostOf, `${path}/hostOf`);
  };
  const proc = (name: string | undefined, path: string) => {
    if (name !== undefined && name !== 'leader' && !daemons.has(name) && !hosts.has(name))
      errs.push({
        path,
        message: `no daemon or host named '${name}' (daemons: ${[...daemons].join(', ')}; hosts: ${[...hosts].join(', ')})`,
      });
  };
  p.steps.forEach(({ step, kind, label }, i) => {
    const at = `/timeline/${i}/${kind}`;
    if (label) {
      if (labels.has(label))
        errs.push({ path: `/timeline/${i}/label`, message: `two steps are labelled '${label}'` });
      labels.set(label, i);
    }
    const s = step as Record<string, unknown>;
    const v = s[kind] as Record<string, unknown> | null | string;
    if (v && typeof v === 'object') {
      vmList(v.vms, `${at}/vms`);
      need(vms, 'VM', v.vm, `${at}/vm`);
      if (['drain', 'undrain', 'kill-agent', 'restart-agent', 'isolate', 'fill-disk'].includes(kind))
        hostRef(v as { host?: string }, at);
      if (kind === 'migrate') need(hosts, 'host', v.to, `${at}/to`);
      if (kind === 'partition') {
        (v.daemons as string[] | undefined)?.forEach((n, j) =>
          need(daemons, 'daemon', n, `${at}/daemons/${j}`),
        );
        if (v.minority && p.daemons < 3)
          errs.push({ path: at, message: 'a minority partition needs at least 3 daemons' });
        if (!v.daemons && !v.minority) errs.push({ path: at, message: "name 'daemons' or 'minority: true'" });
      }
      if (kind === 'slow-link') {
        proc(v.from as string, `${at}/from`);
        proc(v.to as string | undefined, `${at}/to`);
      }
      if (kind === 'stall') proc(v.process as string, `${at}/process`);
      if (kind === 'mark-traffic') need(traffic, 'traffic run', v.traffic, `${at}/traffic`);
      if (kind === 'wait' || kind === 'assert') checkCondition(v, at);
    }
    if (kind === 'kill-daemon') need(daemons, 'daemon', v, at);
    if (kind === 'start-traffic' || kind === 'stop-traffic') need(traffic, 'traffic run', v, at);
    if (kind === 'writes' && !p.writes)
      errs.push({ path: at, message: "the background writer needs 'workload.writes'" });
  });
  function checkCondition(c: Record<string, unknown>, at: string) {
    vmList(c.vmsRunning, `${at}/vmsRunning`);
    if (Array.isArray(c.hostsUp)) c.hostsUp.forEach((h, j) => need(hosts, 'host', h, `${at}/hostsUp/${j}`));
    for (const k of ['hostDown', 'hostRunsNothing', 'hostEmpty']) need(hosts, 'host', c[k], `${at}/${k}`);
    for (const k of ['vmOn', 'vmNotOn']) {
      const x = c[k] as { vm: string; host: string } | undefined;
      need(vms, 'VM', x?.vm, `${at}/${k}/vm`);
      need(hosts, 'host', x?.host, `${at}/${k}/host`);
    }
    if (Object.keys(c).filter((k) => k !== 'within').length === 0)
      errs.push({ path: at, message: 'name at least one condition' });
  }
  p.expectations.forEach(({ spec, kind }, i) => {
    const at = `/expect/${i}/${kind}`;
    const e = spec[kind] as Record<string, unknown>;
    if (typeof e.after === 'string' && !labels.has(e.after))
      errs.push({
        path: `${at}/after`,
        message: `no step is labelled '${e.after}' (labels: ${[...labels.keys()].join(', ') || 'none'})`,
      });
    vmList(e.vms, `${at}/vms`);
    need(vms, 'VM', e.vm, `${at}/vm`);
    need(hosts, 'host', e.host, `${at}/host`);
    need(traffic, 'traffic run', e.traffic, `${at}/traffic`);
  });
  return errs;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++)
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}

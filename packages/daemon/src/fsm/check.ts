import type { z } from 'zod';

/**
 * Zod schemas compiled to plain checking functions, for the commands that carry an entry per VM
 * (vm.create_many, vm.create_compact, vm.observed): zod's safeParse of one VM configuration cost about as much as
 * the rest of the create's apply together, on every replica; and for the commands of each VM's
 * life (vm.change_state, op.result, the migration.* steps), where zod's safeParse was 8 s of a
 * 50,000-VM fill's profile on the three daemons. A compiled check answers as the
 * schema does (unknown keys dropped, defaults filled in, the first bad field named), at a small
 * fraction of the cost; the schema stays the one definition of the shape. It knows the few zod
 * features schemas.ts uses, and refuses to compile any other, so a schema cannot silently grow
 * past it. test/fsm/check.test.ts holds compiled checks to their schemas on random input.
 */

export class ShapeError extends Error {
  /** The field, outermost first (as zod's issue path). */
  readonly path: (string | number)[] = [];
}

export type Check<T> = (v: unknown) => T;

const kind = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);

function fail(message: string): never {
  throw new ShapeError(message);
}

/** Runs `check` on a field, adding the field's name to the path of what it throws. */
function at<T>(key: string | number, check: Check<T>, v: unknown): T {
  try {
    return check(v);
  } catch (err) {
    if (err instanceof ShapeError) err.path.unshift(key);
    throw err;
  }
}

const string =
  ({ min, max }: Lengths): Check<string> =>
  (v) => {
    if (typeof v !== 'string') return fail(`expected a string, got ${kind(v)}`);
    if (v.length > max) return fail(`at most ${max} characters, got ${v.length}`);
    if (v.length < min) return fail(`at least ${min} characters, got ${v.length}`);
    return v;
  };

const boolean: Check<boolean> = (v) =>
  typeof v === 'boolean' ? v : fail(`expected a boolean, got ${kind(v)}`);

const finite: Check<number> = (v) => {
  if (typeof v !== 'number') return fail(`expected a number, got ${kind(v)}`);
  return Number.isFinite(v) ? v : fail(`expected a finite number, got ${v}`);
};

function oneOf<const T extends string>(values: readonly T[]): Check<T> {
  const set = new Set<string>(values);
  return (v) =>
    typeof v === 'string' && set.has(v)
      ? (v as T)
      : fail(
          `expected one of ${values.join(', ')}, got ${typeof v === 'string' ? `'${v.slice(0, 64)}'` : kind(v)}`,
        );
}

function array<T>(item: Check<T>, { min, max }: Lengths): Check<T[]> {
  return (v) => {
    if (!Array.isArray(v)) return fail(`expected an array, got ${kind(v)}`);
    if (v.length > max) return fail(`at most ${max} items, got ${v.length}`);
    if (v.length < min) return fail(`at least ${min} items, got ${v.length}`);
    const out = new Array<T>(v.length);
    for (let i = 0; i < v.length; i++) out[i] = at(i, item, v[i]);
    return out;
  };
}

type Shape = Record<string, Check<unknown>>;
type Out<S extends Shape> = { [K in keyof S]: S[K] extends Check<infer T> ? T : never };

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * An object of these fields; others are dropped, as zod's z.object does. An optional field
 * that is absent stays absent (zod keeps one given as undefined).
 */
function object<S extends Shape>(shape: S, optional: ReadonlySet<string> = new Set()): Check<Out<S>> {
  const keys = Object.keys(shape);
  const checks = keys.map((k) => shape[k]!);
  const maybe = keys.map((k) => optional.has(k));
  return (v) => {
    if (!isObject(v)) return fail(`expected an object, got ${kind(v)}`);
    const out: Record<string, unknown> = {};
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i]!;
      if (maybe[i] && v[k] === undefined && !Object.hasOwn(v, k)) continue;
      out[k] = at(k, checks[i]!, v[k]);
    }
    return out as Out<S>;
  };
}

/** String keys to string values (labels). */
function record(key: Lengths, value: Check<unknown>): Check<Record<string, unknown>> {
  return (v) => {
    if (!isObject(v)) return fail(`expected an object, got ${kind(v)}`);
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v)) {
      if (k.length > key.max || k.length < key.min) {
        const err = new ShapeError(`a key of ${key.min} to ${key.max} characters, got ${k.length}`);
        err.path.push(k);
        throw err;
      }
      out[k] = at(k, value, v[k]);
    }
    return out;
  };
}

export type Checked<T> =
  { success: true; data: T } | { success: false; path: (string | number)[]; message: string };

/** Runs a check, answering as zod's safeParse does. */
export function safeCheck<T>(check: Check<T>, v: unknown): Checked<T> {
  try {
    return { success: true, data: check(v) };
  } catch (err) {
    if (!(err instanceof ShapeError)) throw err;
    return { success: false, path: err.path, message: err.message };
  }
}

/** The parts of zod's internal definitions that compile() reads. */
export interface ZodDef {
  type: string;
  checks?: {
    _zod: {
      def: {
        check: string;
        maximum?: number;
        minimum?: number;
        value?: number;
        inclusive?: boolean;
        format?: string;
      };
    };
  }[];
  shape?: Record<string, z.ZodType>;
  element?: z.ZodType;
  keyType?: z.ZodType;
  valueType?: z.ZodType;
  innerType?: z.ZodType;
  entries?: Record<string, string>;
  defaultValue?: unknown;
}

export const defOf = (schema: z.ZodType): ZodDef => (schema as unknown as { _zod: { def: ZodDef } })._zod.def;

function unsupported(def: ZodDef, what: string): never {
  throw new Error(`compile(): zod ${def.type} with ${what} is not supported; extend fsm/check.ts`);
}

interface Lengths {
  min: number;
  max: number;
}

/** The fewest and most characters or items a string or array schema allows. */
function lengths(def: ZodDef): Lengths {
  let min = 0;
  let max = Infinity;
  for (const { _zod } of def.checks ?? []) {
    const c = _zod.def;
    if (c.check === 'max_length') max = Math.min(max, c.maximum!);
    else if (c.check === 'min_length') min = Math.max(min, c.minimum!);
    else unsupported(def, `the check '${c.check}'`);
  }
  return { min, max };
}

function numberCheck(def: ZodDef): Check<number> {
  let int = false;
  let min = -Infinity;
  let max = Infinity;
  for (const { _zod } of def.checks ?? []) {
    const c = _zod.def;
    if (c.check === 'number_format' && c.format === 'safeint') int = true;
    else if (c.check === 'greater_than' && c.inclusive) min = Math.max(min, c.value!);
    else if (c.check === 'less_than' && c.inclusive) max = Math.min(max, c.value!);
    else unsupported(def, `the check '${c.check}'`);
  }
  if (!int)
    return min === -Infinity && max === Infinity
      ? finite
      : (v) => {
          const n = finite(v);
          return n >= min && n <= max ? n : fail(`expected a number from ${min} to ${max}, got ${n}`);
        };
  return (v) => {
    if (typeof v !== 'number') return fail(`expected a number, got ${kind(v)}`);
    if (!Number.isSafeInteger(v) || v < min || v > max)
      return fail(
        `expected a whole number from ${Math.max(min, Number.MIN_SAFE_INTEGER)} to ${Math.min(max, Number.MAX_SAFE_INTEGER)}, got ${v}`,
      );
    return v;
  };
}

/** The check of a zod schema, built once (at module load): see the comment at the top. */
export function compile<S extends z.ZodType>(schema: S): Check<z.output<S>> {
  return build(schema) as Check<z.output<S>>;
}

function build(schema: z.ZodType): Check<unknown> {
  const def = defOf(schema);
  switch (def.type) {
    case 'string':
      return string(lengths(def));
    case 'number':
      return numberCheck(def);
    case 'boolean':
      return boolean;
    case 'enum':
      return oneOf(Object.values(def.entries!));
    case 'array':
      return array(build(def.element!), lengths(def));
    case 'object': {
      if (def.checks?.length) unsupported(def, 'checks');
      const shape: Shape = {};
      const optional = new Set<string>();
      for (const [k, v] of Object.entries(def.shape!)) {
        shape[k] = build(v);
        if (defOf(v).type === 'optional') optional.add(k);
      }
      return object(shape, optional);
    }
    case 'record': {
      const keyDef = defOf(def.keyType!);
      if (keyDef.type !== 'string') unsupported(def, `keys of type ${keyDef.type}`);
      return record(lengths(keyDef), build(def.valueType!));
    }
    case 'optional': {
      const inner = build(def.innerType!);
      return (v) => (v === undefined ? undefined : inner(v));
    }
    case 'default': {
      const inner = build(def.innerType!);
      // Read at each use: zod hands out a fresh copy of an object default every time.
      return (v) => (v === undefined ? def.defaultValue : inner(v));
    }
    default:
      return unsupported(def, 'this type');
  }
}

/**
 * Request values for the fuzzer, drawn from a field's descriptor: hostile strings, paths that
 * try to leave their folder, numbers at and past their limits, unknown enum values, field masks
 * naming inherited properties, repeated fields empty, long and duplicated. Mixed with sane values
 * and ids the farm knows, so requests also get past the first check and reach the code behind it.
 */
import protobuf from 'protobufjs';
import type { Random } from './random.js';

/** Values the fuzzer learnt from the farm's answers (ids, names), by field name. */
export class Known {
  private readonly byField = new Map<string, string[]>();

  add(field: string, value: string): void {
    if (value === '' || value.length > 200) return;
    const list = this.byField.get(field) ?? [];
    if (list.includes(value)) return;
    list.push(value);
    if (list.length > 40) list.shift();
    this.byField.set(field, list);
  }

  /** A known value for a field of this name ("vm_id" also finds what was seen as "id" of a Vm). */
  for(field: string): string[] {
    return [
      ...(this.byField.get(field) ?? []),
      ...(field.endsWith('_id') ? (this.byField.get('id') ?? []) : []),
    ];
  }

  /** Learns every string field of a decoded answer. */
  learn(value: unknown, field = ''): void {
    if (typeof value === 'string') this.add(field, value);
    else if (Array.isArray(value)) for (const v of value) this.learn(v, field);
    else if (value && typeof value === 'object')
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) this.learn(v, k);
  }
}

/** Where hostile paths point: inside the fuzzer's sandbox only, never elsewhere on the host. */
export interface Targets {
  /** Absolute paths outside the data folders but inside the sandbox (sentinels, folders). */
  outside: string[];
  /** How many `../` a relative path may climb and still stay inside the sandbox. */
  maxUp: number;
}

const LONG = 'a'.repeat(70_000);
const HOSTILE_STRINGS = [
  '',
  ' ',
  '.',
  '..',
  '...',
  '/',
  '\\',
  'a/b',
  'a\\b',
  '..\\..\\x',
  'x\u0000y',
  '\u0000',
  '\n',
  '\t\r',
  '\u202e\u0645',
  '\ud83d\ude00',
  '\ud800',
  '%2e%2e%2f',
  'constructor',
  '__proto__',
  'prototype',
  'toString',
  'hasOwnProperty',
  'valueOf',
  'name.',
  '.name',
  'NaN',
  '-1',
  '1e309',
  '0x10',
  'Infinity',
  'null',
  'undefined',
  '{}',
  '{"a":1}',
  '[]',
  'CON',
  'a'.repeat(64),
  'a'.repeat(65),
  'a'.repeat(255),
  'a'.repeat(256),
  'a'.repeat(5_000),
  LONG,
  '127.0.0.1:1',
  '127.0.0.1:0',
  'localhost:99999',
  '[::1]:1',
  ':',
  '256.1.1.1',
  '00-15-5D-00-00-00',
  'FF-FF-FF-FF-FF-FF',
  '*',
];

const MASK_PATHS = [
  'constructor',
  'toString',
  '__proto__',
  'hasOwnProperty',
  'name.',
  '.',
  '',
  '*',
  'name',
  'config',
  'config.name',
  'memory_bytes',
  'memory_bytes.x',
  'processor',
  'processor.count',
  'disks',
  'network_adapters',
  'labels',
  'labels.x',
  'heartbeat_threshold',
  'automatic_stop_action',
  'a'.repeat(1000),
];

const INT_EDGES = [
  0,
  1,
  -1,
  2,
  7,
  64,
  4096,
  2 ** 31 - 1,
  -(2 ** 31),
  2 ** 32 - 1,
  2 ** 53 - 1,
  -(2 ** 53 - 1),
];
const LONG_EDGES = ['9223372036854775807', '-9223372036854775808', '18446744073709551615'];
const FLOAT_EDGES = [NaN, Infinity, -Infinity, -0, 1e308, -1e308, 5e-324, 0.5, 1.5, -0.5];
const MIB = 1024 * 1024;
const SANE_SIZES = [32 * MIB, 64 * MIB, 128 * MIB, 512 * MIB, 1024 * MIB];

export class Generator {
  /** How often a value is hostile rather than sane, drawn per request. */
  private hostility = 0.5;

  constructor(
    private readonly rng: Random,
    private readonly known: Known,
    private readonly targets: Targets,
  ) {}

  /** A request of `type`, as a plain object protobufjs' fromObject accepts. */
  request(type: protobuf.Type): Record<string, unknown> {
    this.hostility = this.rng.pick([0.05, 0.2, 0.5, 0.9]);
    return this.message(type, 0);
  }

  private hostile(): boolean {
    return this.rng.chance(this.hostility);
  }

  private message(type: protobuf.Type, depth: number): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    if (depth > 4) return out;
    if (type.fullName === '.google.protobuf.FieldMask') {
      out.paths = this.repeated(() => this.maskPath(), true);
      return out;
    }
    const inOneof = new Set<string>();
    for (const oneof of type.oneofsArray) {
      const chosen = this.rng.chance(0.7) ? this.rng.pick(oneof.fieldsArray) : undefined;
      for (const f of oneof.fieldsArray) if (f !== chosen) inOneof.add(f.name);
    }
    for (const field of type.fieldsArray) {
      if (inOneof.has(field.name)) continue;
      if (!this.rng.chance(depth === 0 ? 0.8 : 0.6)) continue;
      out[field.name] = this.field(field, depth);
    }
    return out;
  }

  private field(field: protobuf.Field, depth: number): unknown {
    if (field instanceof protobuf.MapField) {
      const entries: Record<string, unknown> = {};
      const n = this.rng.pick([0, 1, 2, 3, 40]);
      for (let i = 0; i < n; i++) {
        const key =
          field.keyType === 'string' ? this.text(`${field.name}_key`) : String(this.integer(field.keyType));
        entries[key] = this.single(field, depth);
      }
      return entries;
    }
    if (field.repeated) return this.repeated(() => this.single(field, depth), false);
    return this.single(field, depth);
  }

  private repeated(one: () => unknown, short: boolean): unknown[] {
    const n = this.rng.pick(short ? [0, 1, 1, 2, 3] : [0, 1, 1, 2, 3, 20, 300]);
    const items = Array.from({ length: Math.min(n, 20) }, one);
    // Long lists repeat their items: duplicates, and a size that stays far below 4 MiB.
    while (items.length < n) items.push(items[items.length % Math.max(1, Math.min(20, items.length))]);
    return items;
  }

  private single(field: protobuf.Field, depth: number): unknown {
    const resolved = field.resolvedType;
    if (resolved instanceof protobuf.Type) return this.message(resolved, depth + 1);
    if (resolved instanceof protobuf.Enum) return this.enumValue(resolved);
    switch (field.type) {
      case 'string':
        return this.text(field.name);
      case 'bytes':
        return this.bytes();
      case 'bool':
        return this.rng.chance(0.5);
      case 'double':
      case 'float':
        return this.hostile() ? this.rng.pick(FLOAT_EDGES) : this.rng.pick([0, 0.25, 1, 10, 100]);
      default:
        return this.integer(field.type, field.name);
    }
  }

  private enumValue(e: protobuf.Enum): number {
    const values = Object.values(e.values);
    if (this.hostile()) return this.rng.pick([99, -1, 2 ** 31 - 1, ...values]);
    return this.rng.pick(values);
  }

  private integer(type: string, name = ''): number | string {
    if (this.hostile()) {
      const wide = type.endsWith('64');
      return wide && this.rng.chance(0.2) ? this.rng.pick(LONG_EDGES) : this.rng.pick(INT_EDGES);
    }
    if (name.endsWith('_bytes')) return this.rng.pick(SANE_SIZES);
    if (name.endsWith('_ms')) return this.rng.pick([0, 10, 100, 1000]);
    return this.rng.pick([0, 1, 1, 2, 4, 10]);
  }

  private bytes(): Uint8Array {
    const choices = [
      () => new Uint8Array(0),
      () => Buffer.from('not json'),
      () => Buffer.from('{"a":[1,2,3]}'),
      () => Buffer.from('null'),
      () => Buffer.from('[{"x":"\u0000"}]'),
      () => Uint8Array.from({ length: 4096 }, (_, i) => (i * 31) & 0xff),
      () => Uint8Array.from({ length: 17 }, () => this.rng.below(256)),
    ];
    return new Uint8Array(this.rng.pick(choices)());
  }

  private maskPath(): string {
    return this.rng.pick(MASK_PATHS);
  }

  /** A string for a field of this name: known ids, sane names, paths, or something hostile. */
  text(name: string): string {
    const known = this.known.for(name);
    if (known.length > 0 && this.rng.chance(0.4)) return this.rng.pick(known);
    const pathLike = /path|folder|dir|file/.test(name);
    if (pathLike && this.rng.chance(0.7)) return this.path();
    if (!this.hostile()) return this.sane(name);
    return this.rng.chance(0.3) ? this.path() : this.rng.pick(HOSTILE_STRINGS);
  }

  private sane(name: string): string {
    if (name.endsWith('address')) return this.rng.pick(['127.0.0.1:1', '10.0.0.5', '192.168.1.10']);
    if (name === 'guest_os') return this.rng.pick([...this.known.for('guest_os'), 'windows-server-2008-x64']);
    if (name.endsWith('mac_address')) return '00-15-5D-00-01-0A';
    return `fuzz-${name.replace(/_/g, '-')}-${this.rng.below(5)}`;
  }

  /** A path that tries to leave its folder; absolute ones only ever point into the sandbox. */
  private path(): string {
    const up = (n: number) => '../'.repeat(n);
    const k = 1 + this.rng.below(this.targets.maxUp);
    return this.rng.pick([
      () => `${up(k)}victim`,
      () => `${up(k)}`.slice(0, -1),
      () => `${up(k)}outside/victim.txt`,
      () => `a/${up(k + 1)}victim`,
      () => `./${up(k)}x.vhd`,
      () => this.rng.pick(this.targets.outside),
      () => `${this.rng.pick(this.targets.outside)}/x.vhd`,
      () => `${this.rng.pick(this.targets.outside)}/${'d'.repeat(300)}`,
      () => `${this.rng.pick(this.targets.outside)}\u0000.vhd`,
      () => `disk\u0000.vhd`,
      () => `${'a/'.repeat(2000)}x.vhd`,
      () => 'disk.vhd',
      () => 'sub/disk.vhd',
      () => 'disk.vhdx',
      () => '.',
      () => '..',
      () => '',
    ])();
  }
}

import { invalidArgument, PROTO_FILES, protoRoot, quote } from '@hyperfarm/api';
import { join } from 'node:path';
import protobuf from 'protobufjs';

/**
 * Checks a request that arrived as JSON against its protobuf message type, strictly: every key
 * must be a field of the message, every value of the field's type. grpc-js would otherwise
 * convert loosely (an unknown key dropped, "abc" read as 0), so a typo in a browser's request
 * would change what it asks for instead of being refused. What passes is then encoded by
 * grpc-js exactly as a gRPC client's request, and the handler applies its own checks.
 *
 * Field names are the camelCase names the gRPC JSON mapping and grpc-js use; errors name the
 * field by its proto path ("config.memory_bytes"), as the handlers do.
 */

const MAX_DEPTH = 16;
const INT32 = { min: -(2 ** 31), max: 2 ** 31 - 1 };
const UINT32 = { min: 0, max: 2 ** 32 - 1 };

let cachedRoot: protobuf.Root | undefined;

/** The API's message types, loaded once with the same camelCase names grpc-js uses. */
export function messageRoot(): protobuf.Root {
  if (!cachedRoot) {
    const root = new protobuf.Root();
    const dir = protoRoot();
    // google/protobuf/*.proto ship with protobufjs; the rest are the API's own files.
    root.resolvePath = (_origin, target) => (target.startsWith('google/') ? target : join(dir, target));
    root.loadSync([...PROTO_FILES], { keepCase: false });
    root.resolveAll();
    cachedRoot = root;
  }
  return cachedRoot;
}

/** The message type named `hyperfarm.v1.<name>`. */
export function messageType(name: string): protobuf.Type {
  return messageRoot().lookupType(`hyperfarm.v1.${name}`);
}

const snake = (name: string) => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
const join2 = (path: string, name: string) => (path ? `${path}.${name}` : name);

/** Throws INVALID_ARGUMENT naming the first field whose value does not fit `type`. */
export function checkMessage(type: protobuf.Type, value: unknown, path = '', depth = 0): void {
  if (depth > MAX_DEPTH) throw invalidArgument(path || 'request', `nests deeper than ${MAX_DEPTH} levels`);
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw invalidArgument(path || 'request', 'must be an object');
  for (const [key, v] of Object.entries(value)) {
    const field = type.fields[key];
    if (!field)
      throw invalidArgument(
        join2(path, quote(key).slice(1, -1)),
        `is not a field of ${type.name} (fields are camelCase, as in the gRPC JSON mapping)`,
      );
    const at = join2(path, snake(field.name));
    if (v === null || v === undefined) continue;
    if (field.map) {
      if (typeof v !== 'object' || Array.isArray(v)) throw invalidArgument(at, 'must be an object (a map)');
      for (const [k, item] of Object.entries(v)) checkValue(field, item, `${at}[${quote(k)}]`, depth);
    } else if (field.repeated) {
      if (!Array.isArray(v)) throw invalidArgument(at, 'must be a list');
      v.forEach((item, i) => checkValue(field, item, `${at}[${i}]`, depth));
    } else checkValue(field, v, at, depth);
  }
}

function checkValue(field: protobuf.Field, v: unknown, at: string, depth: number): void {
  const resolved = field.resolvedType;
  if (resolved instanceof protobuf.Type) return checkMessage(resolved, v, at, depth + 1);
  if (resolved instanceof protobuf.Enum) {
    const ok =
      (typeof v === 'string' && v in resolved.values) ||
      (typeof v === 'number' && Object.values(resolved.values).includes(v));
    if (!ok)
      throw invalidArgument(at, `${quote(v)} is not one of ${Object.keys(resolved.values).join(', ')}`);
    return;
  }
  switch (field.type) {
    case 'string':
      if (typeof v !== 'string') throw invalidArgument(at, 'must be a string');
      return;
    case 'bool':
      if (typeof v !== 'boolean') throw invalidArgument(at, 'must be true or false');
      return;
    case 'double':
    case 'float':
      if (typeof v !== 'number' || !Number.isFinite(v)) throw invalidArgument(at, 'must be a number');
      return;
    case 'int32':
    case 'sint32':
    case 'sfixed32':
      return checkInteger(v, at, INT32);
    case 'uint32':
    case 'fixed32':
      return checkInteger(v, at, UINT32);
    case 'uint64':
    case 'fixed64':
      return checkInteger(v, at, { min: 0, max: Number.MAX_SAFE_INTEGER });
    case 'int64':
    case 'sint64':
    case 'sfixed64':
      return checkInteger(v, at, { min: Number.MIN_SAFE_INTEGER, max: Number.MAX_SAFE_INTEGER });
    case 'bytes':
      if (typeof v !== 'string' || !/^[A-Za-z0-9+/_-]*={0,2}$/.test(v))
        throw invalidArgument(at, 'must be base64 text');
      return;
    default:
      throw invalidArgument(at, `has a type (${field.type}) the console gateway does not take`);
  }
}

/** 64-bit integers may come as numbers or decimal strings, as in the gRPC JSON mapping. */
function checkInteger(v: unknown, at: string, range: { min: number; max: number }): void {
  const n = typeof v === 'string' && /^-?\d{1,16}$/.test(v) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < range.min || n > range.max)
    throw invalidArgument(at, `must be a whole number from ${range.min} to ${range.max}`);
}

import { readFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import { z } from 'zod';

/**
 * Configuration for the hyperfarm programs. One flat schema per program; every key can be set
 * four ways, and the first that sets it wins:
 *
 *   1. a command-line flag          --grpc-address 127.0.0.1:7000
 *   2. an environment variable      HYPERFARM_AGENT_GRPC_ADDRESS=127.0.0.1:7000
 *   3. the JSON config file         { "grpcAddress": "127.0.0.1:7000" }   (--config FILE)
 *   4. the schema's default
 *
 * Flags and variables are derived from the key's name, and their help from its description.
 */

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

type Kind = 'string' | 'int' | 'number' | 'bool' | 'list';

interface Source {
  /** How a person would name where the value came from. */
  origin: string;
  value: unknown;
}

export interface LoadConfigOptions<S extends z.ZodObject> {
  /** The program's name, for --help. */
  program: string;
  /** HYPERFARM_AGENT for HYPERFARM_AGENT_GRPC_ADDRESS. */
  envPrefix: string;
  schema: S;
  argv: readonly string[];
  env: NodeJS.ProcessEnv;
}

export const kebab = (key: string): string => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
const envName = (prefix: string, key: string): string =>
  `${prefix}_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;

/** Peels defaults and optionals off a schema, to find its description and the kind of value it holds. */
function unwrap(schema: z.ZodType): { inner: z.ZodType; description: string | undefined } {
  let t: z.ZodType = schema;
  let description = t.description;
  while (t instanceof z.ZodDefault || t instanceof z.ZodOptional) {
    t = t.unwrap() as z.ZodType;
    description ??= t.description;
  }
  return { inner: t, description };
}

function kindOf(schema: z.ZodType): Kind {
  const t = unwrap(schema).inner;
  if (t instanceof z.ZodBoolean) return 'bool';
  if (t instanceof z.ZodArray) return 'list';
  if (t instanceof z.ZodNumber) return t.isInt ? 'int' : 'number';
  return 'string';
}

function fromText(kind: Kind, text: string): unknown {
  switch (kind) {
    case 'bool':
      if (/^(1|true|yes|on)$/i.test(text)) return true;
      if (/^(0|false|no|off)$/i.test(text)) return false;
      return text;
    case 'int':
    case 'number':
      return text.trim() !== '' && Number.isFinite(Number(text)) ? Number(text) : text;
    case 'list':
      return text === '' ? [] : text.split(',').map((s) => s.trim());
    default:
      return text;
  }
}

/** Reads configuration per the precedence above. Throws ConfigError naming the key, the source and the reason. */
export function loadConfig<S extends z.ZodObject>(opts: LoadConfigOptions<S>): z.infer<S> {
  const shape = opts.schema.shape as Record<string, z.ZodType>;
  const command = new Command(opts.program)
    .exitOverride()
    .configureOutput({ writeErr: () => undefined, writeOut: (s) => process.stdout.write(s) })
    .allowExcessArguments(false)
    .option('--config <file>', `JSON config file (env ${opts.envPrefix}_CONFIG)`);
  for (const [key, schema] of Object.entries(shape)) {
    const kind = kindOf(schema);
    const help = `${unwrap(schema).description ?? key} (env ${envName(opts.envPrefix, key)})`;
    const flag = kind === 'bool' ? `--${kebab(key)} [bool]` : `--${kebab(key)} <value>`;
    command.addOption(new Option(flag, help));
  }
  try {
    command.parse([...opts.argv], { from: 'user' });
  } catch (err) {
    const e = err as { code?: string; message?: string };
    if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version') throw err;
    throw new ConfigError(`invalid command line: ${(e.message ?? String(err)).replace(/^error: /, '')}`);
  }
  const flags = command.opts<Record<string, unknown>>();

  const configFile =
    (flags['config'] as string | undefined) ?? opts.env[`${opts.envPrefix}_CONFIG`] ?? undefined;
  const fileValues = configFile ? readConfigFile(configFile) : {};
  for (const key of Object.keys(fileValues)) {
    if (!(key in shape)) {
      throw new ConfigError(`invalid configuration: unknown key '${key}' in ${configFile}`);
    }
  }

  const merged: Record<string, unknown> = {};
  const origins: Record<string, string> = {};
  for (const [key, schema] of Object.entries(shape)) {
    const kind = kindOf(schema);
    const variable = envName(opts.envPrefix, key);
    const sources: Source[] = [];
    const flag = flags[key];
    if (flag !== undefined) {
      sources.push({
        origin: `flag --${kebab(key)}`,
        value: flag === true ? true : fromText(kind, String(flag)),
      });
    }
    const fromEnv = opts.env[variable];
    if (fromEnv !== undefined)
      sources.push({ origin: `environment ${variable}`, value: fromText(kind, fromEnv) });
    if (key in fileValues) sources.push({ origin: `config file ${configFile}`, value: fileValues[key] });
    const first = sources[0];
    if (first) {
      merged[key] = first.value;
      origins[key] = first.origin;
    }
  }

  const parsed = opts.schema.safeParse(merged);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const key = String(issue.path[0] ?? '');
    const origin = origins[key] ?? 'default';
    const got = key in merged ? ` (got ${JSON.stringify(merged[key])})` : '';
    throw new ConfigError(`invalid configuration: ${key} from ${origin}: ${issue.message}${got}`);
  }
  return parsed.data;
}

function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${path}: ${(err as Error).message}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`config file ${path} is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ConfigError(`config file ${path} must hold a JSON object`);
  }
  return value as Record<string, unknown>;
}

/** Reusable field schemas, so every program validates the same things the same way. */
export const fields = {
  /** host:port, port 0 to 65535. */
  address: (description: string) =>
    z
      .string()
      .regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'expected host:port')
      .refine((a) => Number(a.slice(a.lastIndexOf(':') + 1)) <= 65535, 'port must be at most 65535')
      .describe(description),
  logLevel: () =>
    z
      .enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'])
      .default('info')
      .describe('log level'),
  id: (description: string) =>
    z
      .string()
      .regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'expected 1 to 63 lowercase letters, digits or dashes')
      .describe(description),
};

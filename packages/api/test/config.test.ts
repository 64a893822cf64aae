import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { z } from 'zod';
import { ConfigError, fields, loadConfig } from '../src/index.js';

const schema = z.object({
  grpcAddress: fields.address('listen address').default('127.0.0.1:7000'),
  memoryMib: z.number().int().min(512).default(1024).describe('memory'),
  verbose: z.boolean().default(false).describe('talk more'),
  peers: z.array(z.string()).default([]).describe('peers'),
  name: z.string().optional().describe('name'),
});

const dir = mkdtempSync(join(tmpdir(), 'hf-config-'));
function file(content: unknown): string {
  const path = join(
    dir,
    `c${Math.abs(JSON.stringify(content).length)}-${Object.keys(content as object).join('')}.json`,
  );
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
  return path;
}
const load = (argv: string[], env: NodeJS.ProcessEnv = {}) =>
  loadConfig({ program: 'test', envPrefix: 'HF_TEST', schema, argv, env });

describe('configuration', () => {
  it('uses the defaults when nothing is set', () => {
    expect(load([])).to.deep.equal({
      grpcAddress: '127.0.0.1:7000',
      memoryMib: 1024,
      verbose: false,
      peers: [],
    });
  });

  it('takes flags over environment over file over defaults', () => {
    const cfg = file({ grpcAddress: '127.0.0.1:1', memoryMib: 2048, name: 'from-file' });
    const env = { HF_TEST_CONFIG: cfg, HF_TEST_MEMORY_MIB: '4096', HF_TEST_NAME: 'from-env' };
    expect(load([], env)).to.include({ grpcAddress: '127.0.0.1:1', memoryMib: 4096, name: 'from-env' });
    expect(load(['--name', 'from-flag', '--memory-mib', '8192'], env)).to.include({
      grpcAddress: '127.0.0.1:1',
      memoryMib: 8192,
      name: 'from-flag',
    });
  });

  it('prefers --config over the environment variable naming a file', () => {
    const a = file({ name: 'a' });
    const b = file({ name: 'bb' });
    expect(load(['--config', b], { HF_TEST_CONFIG: a }).name).to.equal('bb');
  });

  it('parses booleans and comma-separated lists from text', () => {
    expect(load(['--verbose']).verbose).to.equal(true);
    expect(load(['--verbose', 'false']).verbose).to.equal(false);
    expect(load([], { HF_TEST_VERBOSE: 'yes' }).verbose).to.equal(true);
    expect(load(['--peers', 'a=1.2.3.4:5, b=1.2.3.4:6']).peers).to.deep.equal(['a=1.2.3.4:5', 'b=1.2.3.4:6']);
  });

  it('names the key, the source and the reason of a bad value', () => {
    expect(() => load(['--memory-mib', 'lots'])).to.throw(
      ConfigError,
      /memoryMib from flag --memory-mib: .*number.*"lots"/,
    );
    expect(() => load([], { HF_TEST_MEMORY_MIB: '100' })).to.throw(
      ConfigError,
      /memoryMib from environment HF_TEST_MEMORY_MIB: .*512/,
    );
    expect(() => load(['--grpc-address', 'nowhere'])).to.throw(ConfigError, /grpcAddress .*host:port/);
    expect(() => load(['--grpc-address', '127.0.0.1:99999'])).to.throw(ConfigError, /at most 65535/);
  });

  it('refuses unknown flags, unknown file keys and unreadable files', () => {
    expect(() => load(['--memroy-mib', '1'])).to.throw(ConfigError, /unknown option '--memroy-mib'/);
    expect(() => load(['--config', file({ memroyMib: 1 })])).to.throw(ConfigError, /unknown key 'memroyMib'/);
    expect(() => load(['--config', file('{not json')])).to.throw(ConfigError, /not valid JSON/);
    expect(() => load(['--config', join(dir, 'missing.json')])).to.throw(
      ConfigError,
      /cannot read config file/,
    );
  });
});

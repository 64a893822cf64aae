import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import {
  checkHealth,
  ConfigError,
  createServer,
  tlsFromConfig,
  withUnimplemented,
  type TlsFiles,
} from '../src/index.js';
import { captureLogger } from './helpers.js';

/** A throwaway CA with a server and a client certificate for 127.0.0.1, made with openssl. */
function makePki(): { server: TlsFiles; client: TlsFiles; stranger: TlsFiles } {
  const dir = mkdtempSync(join(tmpdir(), 'hf-pki-'));
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  writeFileSync(join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  const ca = (name: string) => {
    ssl(
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '1',
      '-subj',
      `/CN=${name}`,
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.pem`,
    );
  };
  const leaf = (name: string, caName: string) => {
    ssl(
      'req',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-subj',
      `/CN=${name}`,
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.csr`,
    );
    ssl(
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      `${caName}.pem`,
      '-CAkey',
      `${caName}.key`,
      '-CAcreateserial',
      '-days',
      '1',
      '-extfile',
      'san.ext',
      '-out',
      `${name}.pem`,
    );
  };
  ca('ca');
  ca('other-ca');
  leaf('server', 'ca');
  leaf('client', 'ca');
  leaf('stranger', 'other-ca');
  const files = (name: string, caName = 'ca'): TlsFiles => ({
    caFile: join(dir, `${caName}.pem`),
    certFile: join(dir, `${name}.pem`),
    keyFile: join(dir, `${name}.key`),
  });
  return { server: files('server'), client: files('client'), stranger: files('stranger') };
}

describe('mutual TLS is a configuration change', function () {
  this.timeout(30_000);

  it('serves a client with a certificate from the same CA, and refuses plaintext and strangers', async () => {
    const pki = makePki();
    const server = await createServer({ logger: captureLogger().logger, tls: pki.server })
      .add('agent', withUnimplemented('agent', {}, 'x'))
      .listen('127.0.0.1:0');
    try {
      expect(await checkHealth(server.address, '', 5_000, { tls: pki.client })).to.equal('SERVING');
      const plaintext = await checkHealth(server.address, '', 2_000).catch((e: Error) => e);
      expect(plaintext).to.be.instanceOf(Error);
      // A certificate signed by another CA: the server refuses the handshake.
      const stranger = await checkHealth(server.address, '', 2_000, {
        tls: { ...pki.stranger, caFile: pki.client.caFile },
      }).catch((e: Error) => e);
      expect(stranger).to.be.instanceOf(Error);
    } finally {
      await server.shutdown();
    }
  });
});

describe('TLS from a program configuration', () => {
  it('is all three files or none: a partial set is refused, naming what is needed', () => {
    expect(tlsFromConfig({})).to.equal(undefined);
    expect(tlsFromConfig({ tlsCa: 'ca', tlsCert: 'c', tlsKey: 'k' })).to.deep.equal({
      caFile: 'ca',
      certFile: 'c',
      keyFile: 'k',
    });
    for (const partial of [{ tlsCa: 'ca' }, { tlsCert: 'c', tlsKey: 'k' }, { tlsKey: 'k' }]) {
      expect(() => tlsFromConfig(partial)).to.throw(
        ConfigError,
        /mutual TLS needs all of tlsCa, tlsCert and tlsKey/,
      );
    }
  });
});

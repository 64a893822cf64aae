import { expect } from 'chai';
import { ConfigError } from '@hyperfarm/api';
import { loadDaemonConfig } from '../src/config.js';

describe('daemon configuration', () => {
  it('defaults to a single-member cluster of itself', () => {
    const c = loadDaemonConfig([], {});
    expect(c.id).to.equal('daemon-1');
    expect([...c.peers]).to.deep.equal([['daemon-1', '127.0.0.1:7000']]);
  });

  it('reads peers as id=host:port from flags or the environment', () => {
    const peers = 'daemon-1=127.0.0.1:7001,daemon-2=127.0.0.1:7002,daemon-3=[::1]:7003';
    const c = loadDaemonConfig(['--peers', peers], {});
    expect([...c.peers.keys()]).to.deep.equal(['daemon-1', 'daemon-2', 'daemon-3']);
    expect(c.peers.get('daemon-3')).to.equal('[::1]:7003');
    const fromEnv = loadDaemonConfig(['--id', 'daemon-2'], { HYPERFARM_DAEMON_PEERS: peers });
    expect(fromEnv.peers.size).to.equal(3);
  });

  it('refuses malformed, duplicate or foreign peer lists', () => {
    expect(() => loadDaemonConfig(['--peers', 'daemon-1@127.0.0.1:1'], {})).to.throw(
      ConfigError,
      /peers .*id=host:port/,
    );
    expect(() => loadDaemonConfig(['--peers', 'daemon-1=127.0.0.1:1,daemon-1=127.0.0.1:2'], {})).to.throw(
      ConfigError,
      /member 'daemon-1' is listed twice/,
    );
    expect(() => loadDaemonConfig(['--peers', 'daemon-2=127.0.0.1:2'], {})).to.throw(
      ConfigError,
      /this daemon's id 'daemon-1' is not among them/,
    );
  });

  it('refuses half a TLS configuration before anything starts', () => {
    expect(() => loadDaemonConfig(['--tls-ca', '/etc/ca.pem'], {})).to.throw(
      ConfigError,
      /mutual TLS needs all of tlsCa, tlsCert and tlsKey/,
    );
    const tls = loadDaemonConfig(['--tls-ca', 'ca', '--tls-cert', 'cert', '--tls-key', 'key'], {}).tls;
    expect(tls).to.deep.equal({ caFile: 'ca', certFile: 'cert', keyFile: 'key' });
  });

  it("takes the host monitor's timings from a profile: Failover Clustering's by default, or fast; one flag overrides one value", () => {
    const d = loadDaemonConfig([], {});
    // Failover Clustering 2008: a heartbeat each second, Down after five missed.
    expect([d.heartbeatMs, d.downAfterMs, d.hostLeaseMs]).to.deep.equal([1_000, 5_000, 4_500]);
    const f = loadDaemonConfig(['--liveness-profile', 'fast'], {});
    expect([f.heartbeatMs, f.downAfterMs / f.heartbeatMs, f.hostLeaseMs]).to.deep.equal([250, 4, 1_000]);
    const o = loadDaemonConfig(['--liveness-profile', 'fast', '--down-after-ms', '2000'], {});
    expect([o.heartbeatMs, o.downAfterMs]).to.deep.equal([250, 2_000]);
    expect(() => loadDaemonConfig(['--suspect-after-ms', '6000'], {})).to.throw(
      ConfigError,
      /suspectAfterMs \(6000\) must be below downAfterMs \(5000\)/,
    );
  });

  it('takes a Raft timing profile, default or fast, and refuses any other', () => {
    expect(loadDaemonConfig([], {}).raftProfile).to.equal('default');
    expect(loadDaemonConfig(['--raft-profile', 'fast'], {}).raftProfile).to.equal('fast');
    expect(loadDaemonConfig([], { HYPERFARM_DAEMON_RAFT_PROFILE: 'fast' }).raftProfile).to.equal('fast');
    expect(() => loadDaemonConfig(['--raft-profile', 'quick'], {})).to.throw(
      ConfigError,
      /raftProfile|raft-profile/,
    );
  });
});

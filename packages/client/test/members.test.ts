import { expect } from 'chai';
import { Command } from 'commander';
import {
  createLogger,
  createServer,
  status,
  unary,
  unavailable,
  withUnimplemented,
  type pb,
  type RunningServer,
} from '@hyperfarm/api';
import { membersCommand, runProgram } from '../src/index.js';

/** A daemon's ClusterService that answers ListMembers with a fixed view. */
const VIEW: pb.ListMembersResponse = {
  members: [
    {
      id: 'daemon-1',
      address: '10.0.0.1:7000',
      role: 'voter',
      isLeader: false,
      reachable: true,
      matchIndex: 9,
    },
    {
      id: 'daemon-2',
      address: '10.0.0.2:7000',
      role: 'voter',
      isLeader: true,
      reachable: true,
      matchIndex: 9,
    },
    {
      id: 'daemon-3',
      address: '10.0.0.3:7000',
      role: 'learner',
      isLeader: false,
      reachable: false,
      matchIndex: 4,
    },
  ],
  leaderId: 'daemon-2',
  term: 7,
  answeredBy: 'daemon-1',
};

describe('hyperfarm members', () => {
  let server: RunningServer;

  before(async () => {
    server = await createServer({ logger: createLogger({ program: 'test', id: 'test', level: 'silent' }) })
      .add(
        'cluster',
        withUnimplemented(
          'cluster',
          {
            ListMembers: unary<pb.ListMembersRequest__Output, pb.ListMembersResponse>(() => VIEW),
            TransferLeadership: unary<pb.TransferLeadershipRequest__Output, pb.TransferLeadershipResponse>(
              () => {
                throw unavailable('no leader yet (an election is under way): retry');
              },
            ),
          },
          'test',
        ),
      )
      .listen('127.0.0.1:0');
  });
  after(() => server.shutdown());

  async function members(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
    let out = '';
    let err = '';
    const io = { stdout: (t: string) => (out += t), stderr: (t: string) => (err += t) };
    const code = await runProgram(
      new Command('hyperfarm').addCommand(membersCommand(io)),
      ['members', ...argv],
      io,
    );
    return { code, out, err };
  }

  it('lists the members with their role, the leader and who is reachable', async () => {
    const r = await members('--daemon', server.address);
    expect(r.code, r.err).to.equal(0);
    expect(r.out.split('\n').map((l) => l.split(/\s{2,}/))).to.deep.equal([
      ['term 7, leader daemon-2, answered by daemon-1'],
      ['ID', 'ADDRESS', 'ROLE', 'LEADER', 'REACHABLE'],
      ['daemon-1', '10.0.0.1:7000', 'voter', 'yes'],
      ['daemon-2', '10.0.0.2:7000', 'voter', 'yes', 'yes'],
      ['daemon-3', '10.0.0.3:7000', 'learner', 'no'],
      [''],
    ]);
  });

  it('prints the answer as JSON with -o json', async () => {
    const r = await members('--daemon', server.address, '-o', 'json');
    expect(JSON.parse(r.out)).to.deep.include({ leaderId: 'daemon-2', term: 7 });
  });

  it('refuses a --daemon that is not host:port, and reports a status with its code', async () => {
    const bad = await members('--daemon', 'nowhere');
    expect(bad).to.deep.include({ code: 2 });
    expect(bad.err).to.match(/--daemon: 'nowhere' is not host:port/);
    const refused = await members('transfer', '--daemon', server.address);
    expect(refused.code).to.equal(1);
    expect(refused.err).to.match(new RegExp(`${status[status.UNAVAILABLE]}: no leader yet`));
  });
});

import { expect } from 'chai';
import {
  ApiError,
  createLogger,
  createServer,
  status,
  statusOf,
  unary,
  withUnimplemented,
  type pb,
  type RunningServer,
} from '@hyperfarm/api';
import { GrpcAgentPort } from '../src/edge/grpc-agent-port.js';

const config = (name: string): pb.VmConfig => ({ name, processor: { count: 1 }, memoryBytes: 1 << 30 });

/**
 * An agent's AgentService that creates any VM but one named 'refused' (FAILED_PRECONDITION), and
 * records which calls it got. Without `batch`, an older agent: no CreateVms (UNIMPLEMENTED).
 */
async function fakeAgent(batch: boolean) {
  const calls: string[] = [];
  const create = (req: pb.AgentCreateVmRequest__Output): pb.Vm => {
    if (req.config?.name === 'refused')
      throw new ApiError(status.FAILED_PRECONDITION, `no room for ${req.vmId}`);
    return { id: req.vmId, config: req.config!, status: { generation: req.generation } };
  };
  const handlers: Partial<pb.AgentServiceHandlers> = {
    CreateVm: unary<pb.AgentCreateVmRequest__Output, pb.Vm>((req) => {
      calls.push(`CreateVm ${req.vmId}`);
      return create(req);
    }),
  };
  if (batch)
    handlers.CreateVms = unary<pb.AgentCreateVmsRequest__Output, pb.AgentCreateVmsResponse>((req) => {
      calls.push(`CreateVms ${req.creates.map((c) => c.vmId).join(',')}`);
      return {
        results: req.creates.map((c): pb.AgentCreateVmResult => {
          try {
            return { vm: create(c) };
          } catch (err) {
            return { error: { code: (err as ApiError).code, message: (err as ApiError).message } };
          }
        }),
      };
    });
  const server = await createServer({
    logger: createLogger({ program: 'test', id: 'agent', level: 'silent' }),
  })
    .add('agent', withUnimplemented('agent', handlers, 'test'))
    .listen('127.0.0.1:0');
  return { server, calls };
}

describe('GrpcAgentPort: creates', () => {
  const servers: RunningServer[] = [];
  const port = new GrpcAgentPort();
  after(() => port.close());
  afterEach(async () => Promise.all(servers.splice(0).map((s) => s.shutdown(100))));

  /**
   * Three creates asked in one turn, the second refused: what each caller got back (the host's
   * reason as the runner reads it: a gRPC error's details, else its message).
   */
  async function threeCreates(address: string) {
    const host = { id: 'h1', address };
    const asked = [
      port.createVm(host, 'vm-1', config('a'), 3),
      port.createVm(host, 'vm-2', config('refused'), 3),
      port.createVm(host, 'vm-3', config('c'), 4),
    ];
    return Promise.all(
      asked.map((p) =>
        p.then(
          (vm) => `${vm.id}@${vm.status!.generation}`,
          (err: unknown) =>
            `${status[statusOf(err)!]}: ${(err as { details?: string }).details ?? (err as Error).message}`,
        ),
      ),
    );
  }
  const ANSWERS = ['vm-1@3', 'FAILED_PRECONDITION: no room for vm-2', 'vm-3@4'];

  it('asked of one agent in a turn, go in one CreateVms call, each answered on its own', async () => {
    const agent = await fakeAgent(true);
    servers.push(agent.server);
    expect(await threeCreates(agent.server.address)).to.deep.equal(ANSWERS);
    expect(agent.calls).to.deep.equal(['CreateVms vm-1,vm-2,vm-3']);
    // A lone create is a CreateVm call, as before.
    const vm = await port.createVm({ id: 'h1', address: agent.server.address }, 'vm-4', config('d'), 1);
    expect(vm.id).to.equal('vm-4');
    expect(agent.calls.slice(1)).to.deep.equal(['CreateVm vm-4']);
  });

  it('to an agent without CreateVms, go one CreateVm call each, with the same answers', async () => {
    const agent = await fakeAgent(false);
    servers.push(agent.server);
    expect(await threeCreates(agent.server.address)).to.deep.equal(ANSWERS);
    expect(agent.calls.slice(-3).sort()).to.deep.equal(['CreateVm vm-1', 'CreateVm vm-2', 'CreateVm vm-3']);
    // Known from then on: no CreateVms tried again.
    expect(await threeCreates(agent.server.address)).to.deep.equal(ANSWERS);
    expect(agent.calls).to.have.length(6);
  });
});

describe('GrpcAgentPort: brief lease answers', () => {
  const port = new GrpcAgentPort();
  let server: RunningServer | undefined;
  after(() => port.close());
  afterEach(async () => server?.shutdown(100));

  /** An agent of two hosts that answers each grant with these figures, as an agent's handler would. */
  async function leasingAgent(network: boolean) {
    const usage = (n: number): pb.HostUsage => ({
      memoryUsedBytes: 6_000_000_000 + n,
      runningVms: n,
      vms: n + 1,
      cpuPercent: 12.5 * n,
    });
    const handlers: Partial<pb.AgentServiceHandlers> = {
      GrantLease: unary<pb.GrantLeaseRequest__Output, pb.GrantLeaseResponse>((req) => ({
        // Beyond 2^32: a 64-bit field the decoder has to bring back as a number.
        expiresAtMs: 1_780_000_000_123,
        host: { id: 'h1', usage: usage(1) },
        more: req.more.map((m, i) =>
          m.hostId === 'h2'
            ? {
                hostId: 'h2',
                expiresAtMs: 1_780_000_000_456 + i,
                host: { id: 'h2', usage: usage(2) },
                ...(network ? { network: { revision: 9 } } : {}),
              }
            : { hostId: m.hostId, error: `host '${m.hostId}' is not served by this agent process` },
        ),
        siblingHostIds: ['h2'],
        ...(network ? { network: { revision: 0 } } : {}),
      })),
    };
    server = await createServer({ logger: createLogger({ program: 'test', id: 'agent', level: 'silent' }) })
      .add('agent', withUnimplemented('agent', handlers, 'test'))
      .listen('127.0.0.1:0');
    return { id: 'h1', address: server.address };
  }
  const grant = (brief: boolean) => ({
    daemonId: 'd1',
    term: 1,
    durationMs: 4_000,
    more: [
      { hostId: 'h2', durationMs: 4_000 },
      { hostId: 'h9', durationMs: 4_000 },
    ],
    brief,
  });

  it('reads every figure a brief answer carries as the whole decode does, the applied network included', async () => {
    const host = await leasingAgent(true);
    const brief = await port.grantLease(host, grant(true));
    expect(brief).to.deep.equal({
      expiresAtMs: 1_780_000_000_123,
      host: { id: 'h1', usage: { memoryUsedBytes: 6_000_000_001, runningVms: 1, vms: 2, cpuPercent: 12.5 } },
      more: [
        {
          hostId: 'h2',
          expiresAtMs: 1_780_000_000_456,
          host: {
            id: 'h2',
            usage: { memoryUsedBytes: 6_000_000_002, runningVms: 2, vms: 3, cpuPercent: 25 },
          },
          error: '',
          network: { revision: 9 },
        },
        {
          hostId: 'h9',
          expiresAtMs: 0,
          host: null,
          error: "host 'h9' is not served by this agent process",
          network: null,
        },
      ],
      siblingHostIds: ['h2'],
      network: { revision: 0 },
    });
    // The same fields through grpc-js's own decode (a whole answer's path).
    const whole = await port.grantLease(host, grant(false));
    expect(whole.expiresAtMs).to.equal(brief.expiresAtMs);
    expect(whole.host!.usage).to.deep.equal(brief.host!.usage);
    expect(
      whole.more!.map((r) => [r.hostId, r.expiresAtMs, r.host?.usage ?? null, r.error, r.network]),
    ).to.deep.equal(
      brief.more!.map((r) => [r.hostId, r.expiresAtMs, r.host?.usage ?? null, r.error, r.network]),
    );
    expect(whole.network).to.deep.equal(brief.network);
  });

  it('an answer without the applied network (an older agent) reads as unset, not as revision 0', async () => {
    const brief = await port.grantLease(await leasingAgent(false), grant(true));
    expect(brief.network).to.equal(null);
    expect(brief.more![0]!.network).to.equal(null);
  });
});

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

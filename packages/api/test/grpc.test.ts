import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import {
  checkHealth,
  createClient,
  hyperfarmProto,
  invalidArgument,
  listServices,
  promiseClient,
  SERVICE_NAMES,
  startServer,
  unary,
  withUnimplemented,
  type RunningServer,
  type pb,
} from '../src/index.js';

describe('gRPC server and channel factory', () => {
  const v1 = hyperfarmProto().hyperfarm.v1;
  let server: RunningServer;

  before(async () => {
    server = await startServer({
      address: '127.0.0.1:0',
      services: [
        {
          name: SERVICE_NAMES.agent,
          definition: v1.AgentService.service,
          implementation: withUnimplemented(
            SERVICE_NAMES.agent,
            v1.AgentService.service,
            {
              GetHostInfo: unary<pb.GetHostInfoRequest__Output, pb.Host>(() => ({ id: 'h1', name: 'one' })),
              GetVm: unary<pb.AgentGetVmRequest__Output, pb.Vm>((req) => {
                throw invalidArgument('vm_id', `'${req.vmId}' is not a valid id`);
              }),
            },
            'a later issue',
          ),
        },
      ],
    });
  });
  after(() => server.shutdown());

  it('binds a free port and answers health checks for the server and each service', async () => {
    expect(server.port).to.be.greaterThan(0);
    expect(await checkHealth(server.address)).to.equal('SERVING');
    expect(await checkHealth(server.address, SERVICE_NAMES.agent)).to.equal('SERVING');
  });

  it('lists its services through reflection, health and reflection included', async () => {
    const services = await listServices(server.address);
    expect(services).to.deep.equal([
      'grpc.health.v1.Health',
      'grpc.reflection.v1.ServerReflection',
      SERVICE_NAMES.agent,
    ]);
  });

  it('carries implemented calls, API errors with their field, and UNIMPLEMENTED for the rest', async () => {
    const client = createClient(v1.AgentService, server.address);
    const agent = promiseClient(client);
    expect(await agent.getHostInfo({})).to.include({ id: 'h1', name: 'one' });

    const bad = await agent.getVm({ vmId: 'x y' }).catch((e: grpc.ServiceError) => e);
    expect(bad).to.include({
      code: grpc.status.INVALID_ARGUMENT,
      details: "invalid vm_id: 'x y' is not a valid id",
    });
    expect((bad as grpc.ServiceError).metadata.get('hyperfarm-field')).to.deep.equal(['vm_id']);

    const missing = await agent.listVms({}).catch((e: grpc.ServiceError) => e);
    expect(missing).to.include({ code: grpc.status.UNIMPLEMENTED });
    expect((missing as grpc.ServiceError).details).to.match(
      /AgentService.ListVms is not implemented yet \(planned: a later issue\)/,
    );

    const stream = client.watchEvents({});
    const streamErr = await new Promise<grpc.ServiceError>((resolve) => stream.on('error', resolve));
    expect(streamErr.code).to.equal(grpc.status.UNIMPLEMENTED);
    client.close();
  });

  it('refuses a message over the configured limit', async () => {
    const small = await startServer({
      address: '127.0.0.1:0',
      maxMessageBytes: 1024,
      services: [
        {
          name: SERVICE_NAMES.agent,
          definition: v1.AgentService.service,
          implementation: withUnimplemented(SERVICE_NAMES.agent, v1.AgentService.service, {}, 'x'),
        },
      ],
    });
    const agent = promiseClient(createClient(v1.AgentService, small.address));
    const err = await agent.getVm({ vmId: 'x'.repeat(4096) }).catch((e: grpc.ServiceError) => e);
    expect(err).to.have.property('code', grpc.status.RESOURCE_EXHAUSTED);
    await small.shutdown();
  });
});

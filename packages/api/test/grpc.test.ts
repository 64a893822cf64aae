import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import {
  checkHealth,
  createClient,
  createServer,
  hyperfarmProto,
  invalidArgument,
  leaderHint,
  listServices,
  promiseClient,
  quote,
  reflectionDefinition,
  SERVICE_NAMES,
  serverStream,
  standardDefinition,
  unary,
  unavailable,
  withUnimplemented,
  type RunningServer,
  type pb,
} from '../src/index.js';
import { captureLogger } from './helpers.js';

describe('gRPC server and channel factory', () => {
  const v1 = hyperfarmProto().hyperfarm.v1;
  const log = captureLogger();
  let server: RunningServer;

  before(async () => {
    server = await createServer({ logger: log.logger })
      .add(
        'agent',
        withUnimplemented(
          'agent',
          {
            GetHostInfo: unary<pb.GetHostInfoRequest__Output, pb.Host>(() => ({ id: 'h1', name: 'one' })),
            GetVm: unary<pb.AgentGetVmRequest__Output, pb.Vm>((req) => {
              throw invalidArgument('vm_id', `${quote(req.vmId)} is not a valid id`);
            }),
            DeleteVm: unary<pb.AgentDeleteVmRequest__Output, pb.AgentDeleteVmResponse>(() => {
              throw unavailable("not the leader; the leader is 'd2'", { id: 'd2', address: '10.0.0.2:7000' });
            }),
            ListVms: unary<pb.AgentListVmsRequest__Output, pb.AgentListVmsResponse>(() => {
              throw new TypeError('a bug in the handler');
            }),
            WatchEvents: serverStream<pb.WatchAgentEventsRequest__Output, pb.AgentEvent>(() => {
              throw new RangeError('a bug in the stream');
            }),
          },
          'a later issue',
        ),
      )
      .listen('127.0.0.1:0');
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

  it('describes services and messages through reflection, from one entry per loaded set of files', async () => {
    // The reflection service decodes every file of each entry it is given: one entry per load
    // (hyperfarm's files, then health and reflection), not one per type.
    expect(Object.keys(reflectionDefinition())).to.have.length(2);
    const described = async (symbol: string): Promise<string> => {
      const ctor = (
        grpc.loadPackageDefinition(standardDefinition()) as unknown as {
          grpc: { reflection: { v1: { ServerReflection: grpc.ServiceClientConstructor } } };
        }
      ).grpc.reflection.v1.ServerReflection;
      const client = new ctor(server.address, grpc.credentials.createInsecure());
      try {
        const call = (
          client as unknown as { serverReflectionInfo(): grpc.ClientDuplexStream<unknown, unknown> }
        ).serverReflectionInfo();
        const answer = new Promise<{
          fileDescriptorResponse?: { fileDescriptorProto: Buffer[] };
          errorResponse?: { errorMessage: string };
        }>((resolve, reject) => {
          call.on('data', resolve);
          call.on('error', reject);
        });
        call.write({ fileContainingSymbol: symbol });
        const res = await answer;
        call.end();
        if (res.errorResponse) return `error: ${res.errorResponse.errorMessage}`;
        return Buffer.concat(res.fileDescriptorResponse?.fileDescriptorProto ?? []).toString('latin1');
      } finally {
        client.close();
      }
    };
    const agent = await described(SERVICE_NAMES.agent);
    expect(agent).to.include('AgentService').and.to.include('GetHostInfo');
    expect(await described('hyperfarm.v1.VmConfig')).to.include('VmConfig');
    expect(await described('grpc.health.v1.Health')).to.include('HealthCheckRequest');
    expect(await described('hyperfarm.v1.NoSuchThing')).to.match(/^error: /);
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

    const missing = await agent.createVm({}).catch((e: grpc.ServiceError) => e);
    expect(missing).to.include({ code: grpc.status.UNIMPLEMENTED });
    expect((missing as grpc.ServiceError).details).to.match(
      /AgentService.CreateVm is not implemented yet \(planned: a later issue\)/,
    );

    const stream = client.migrateOut({});
    const streamErr = await new Promise<grpc.ServiceError>((resolve) => stream.on('error', resolve));
    expect(streamErr.code).to.equal(grpc.status.UNIMPLEMENTED);
    client.close();
  });

  it('sends the leader hint in trailers with UNAVAILABLE', async () => {
    const agent = promiseClient(createClient(v1.AgentService, server.address));
    const err = await agent.deleteVm({ vmId: 'a' }).catch((e: grpc.ServiceError) => e);
    expect(err).to.include({ code: grpc.status.UNAVAILABLE });
    expect((err as grpc.ServiceError).metadata.get('hyperfarm-leader-id')).to.deep.equal(['d2']);
    expect((err as grpc.ServiceError).metadata.get('hyperfarm-leader-address')).to.deep.equal([
      '10.0.0.2:7000',
    ]);
    expect(leaderHint(err)).to.deep.equal({ id: 'd2', address: '10.0.0.2:7000' });
  });

  it('quotes a 1 MiB id only in part, so the status stays a header clients accept', async () => {
    const agent = promiseClient(createClient(v1.AgentService, server.address));
    const err = (await agent.getVm({ vmId: 'v'.repeat(1024 * 1024) }).catch((e) => e)) as grpc.ServiceError;
    expect(err.code).to.equal(grpc.status.INVALID_ARGUMENT);
    expect(err.details).to.equal(
      `invalid vm_id: '${'v'.repeat(64)}…' (1048576 characters) is not a valid id`,
    );
  });

  it('logs an unexpected exception with its stack and method, and answers INTERNAL', async () => {
    const client = createClient(v1.AgentService, server.address);
    const unaryErr = (await promiseClient(client)
      .listVms({})
      .catch((e) => e)) as grpc.ServiceError;
    expect(unaryErr).to.include({ code: grpc.status.INTERNAL, details: 'a bug in the handler' });
    const stream = client.watchEvents({});
    const streamErr = await new Promise<grpc.ServiceError>((resolve) => stream.on('error', resolve));
    expect(streamErr).to.include({ code: grpc.status.INTERNAL, details: 'a bug in the stream' });
    client.close();

    const errors = log.lines().filter((l) => l.msg === 'unexpected error in a handler');
    expect(errors.map((l) => l.method)).to.deep.equal([
      '/hyperfarm.v1.AgentService/ListVms',
      '/hyperfarm.v1.AgentService/WatchEvents',
    ]);
    const err = errors[0]!.err as { type: string; stack: string };
    expect(err.type).to.equal('TypeError');
    expect(err.stack).to.match(/TypeError: a bug in the handler\n\s+at /);
    // Statuses the handlers chose are not errors of the server: nothing else was logged.
    expect(log.lines().filter((l) => l.level >= 50)).to.have.length(2);
  });

  it('refuses a message over the configured limit', async () => {
    const small = await createServer({ logger: log.logger, maxMessageBytes: 1024 })
      .add('agent', withUnimplemented('agent', {}, 'x'))
      .listen('127.0.0.1:0');
    try {
      const agent = promiseClient(createClient(v1.AgentService, small.address));
      const err = await agent.getVm({ vmId: 'x'.repeat(4096) }).catch((e: grpc.ServiceError) => e);
      expect(err).to.have.property('code', grpc.status.RESOURCE_EXHAUSTED);
    } finally {
      await small.shutdown();
    }
  });

  it('a handler registered before bind learns the bound address from the server; asking earlier throws', async () => {
    const builder = createServer({ logger: log.logger });
    builder.add(
      'agent',
      withUnimplemented(
        'agent',
        {
          GetHostInfo: unary<pb.GetHostInfoRequest__Output, pb.Host>(() => ({
            id: 'h',
            address: builder.address(),
          })),
        },
        'x',
      ),
    );
    expect(() => builder.address()).to.throw(/not bound/);
    const bound = await builder.listen('127.0.0.1:0');
    try {
      expect(builder.address())
        .to.equal(bound.address)
        .and.to.match(/^127\.0\.0\.1:[1-9]\d*$/);
      const agent = promiseClient(createClient(v1.AgentService, bound.address));
      expect((await agent.getHostInfo({})).address).to.equal(bound.address);
    } finally {
      await bound.shutdown();
    }
  });
});

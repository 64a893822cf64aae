import { expect } from 'chai';
import { serviceDefinition, type pb } from '@hyperfarm/api';
import { listVmsResponse } from '../src/edge/vms-api.js';
import { vmView } from '../src/fsm/views.js';
import { FarmBuilder } from './fsm/build.js';

const def = serviceDefinition('cluster')['ListVms']!;
const encode = def.responseSerialize as (r: pb.ListVmsResponse) => Buffer;
const decode = def.responseDeserialize as (b: Buffer) => pb.ListVmsResponse__Output;

// From the definition: what a client decodes from the response encoded whole.
const asEncodedWhole = (b: FarmBuilder, ids: string[], nextPageToken: string) =>
  decode(encode({ vms: ids.map((id) => vmView(b.s.vms.get(id)!)), nextPageToken }));
const asJoined = (b: FarmBuilder, ids: string[], nextPageToken: string) =>
  decode(
    listVmsResponse(
      ids.map((id) => b.s.vms.get(id)!),
      nextPageToken,
    ).bytes,
  );

describe("ListVms' response, joined from each VM's kept encoding", () => {
  it('decodes as the response encoded whole, with and without a next page, and with no VMs', () => {
    const b = new FarmBuilder().host({ id: 'h1' }).host({ id: 'h2' });
    b.vm('vm-a', { name: 'a', memMiB: 512 }, 'h1').report('vm-a', 'RUNNING');
    b.vm('vm-b', { name: 'b', memMiB: 256 }, 'h2');
    b.vm('vm-c', { name: 'c', memMiB: 1024 });
    for (const [ids, token] of [
      [['vm-a', 'vm-b', 'vm-c'], ''],
      [['vm-a', 'vm-b'], 'dm1zOnZtLWI'],
      [['vm-c', 'vm-a'], ''],
      [[], ''],
    ] as const) {
      const want = asEncodedWhole(b, [...ids], token);
      expect(asJoined(b, [...ids], token), `${ids.join(',')} ${token}`).to.deep.equal(want);
      expect(want.vms.map((v) => v.id)).to.deep.equal(ids);
      expect(want.nextPageToken).to.equal(token);
    }
  });

  it('lists a VM as it is now, after each change, never an encoding of an earlier record', () => {
    const b = new FarmBuilder().host({ id: 'h1' });
    b.vm('vm-a', { name: 'a', memMiB: 512 }, 'h1');
    const states: string[] = [];
    for (const state of ['RUNNING', 'PAUSED', 'OFF']) {
      asJoined(b, ['vm-a'], '');
      b.report('vm-a', state);
      const got = asJoined(b, ['vm-a'], '');
      expect(got).to.deep.equal(asEncodedWhole(b, ['vm-a'], ''));
      states.push(got.vms[0]!.status!.state);
    }
    expect(states).to.deep.equal(['VM_STATE_RUNNING', 'VM_STATE_PAUSED', 'VM_STATE_OFF']);
  });
});

import { expect } from 'chai';
import { applyEntry, encodeEntry } from '../../src/fsm/apply.js';
import type { Command } from '../../src/fsm/index.js';
import { emptyState } from '../../src/fsm/state.js';
import { vmConfig } from './fixtures.js';

// An entry is UTF-8 JSON (docs/daemon.md): each is decoded on its own, a byte that is not
// UTF-8 read as U+FFFD rather than refused, and nothing of one entry carries into the next
// (the decoder is shared by every apply since issue 14: it must not keep state between calls).

const create = (name: string, id: string) =>
  ({
    type: 'vm.create',
    rid: `rid-${id}`,
    t: 1_000,
    vmId: `vm-${id}`,
    opId: `op-${id}`,
    config: vmConfig({ name, memMiB: 512 }),
    start: false,
    hostId: '',
  }) as Command;

const bytes = (...parts: (string | number[])[]) =>
  Uint8Array.from(parts.flatMap((p) => (typeof p === 'string' ? [...new TextEncoder().encode(p)] : p)));

describe('an entry as the state machine decodes it', () => {
  it('is refused when cut in a character, and the next entry is read whole', () => {
    const s = emptyState();
    const whole = encodeEntry([create('wéb-日本', 'a')]);
    // The first two bytes of 'é' only: the rest of the entry is missing.
    const cut = whole.subarray(0, whole.indexOf(0xc3) + 1);
    expect(applyEntry(s, cut).results).to.deep.equal([
      {
        ok: false,
        error: { code: 'INVALID_ARGUMENT', message: 'the entry is not a farm command batch: not JSON' },
      },
    ]);
    expect(applyEntry(s, whole).results).to.deep.equal([{ ok: true, vmId: 'vm-a', opId: 'op-a' }]);
    expect(s.vms.get('vm-a')!.config.name).to.equal('wéb-日本');
  });

  it('reads a byte that is not UTF-8 as U+FFFD', () => {
    const s = emptyState();
    const [head, tail] = new TextDecoder().decode(encodeEntry([create('web?', 'b')])).split('web?');
    const entry = bytes(head!, 'web', [0xff], tail!);
    expect(applyEntry(s, entry).results).to.deep.equal([{ ok: true, vmId: 'vm-b', opId: 'op-b' }]);
    expect(s.vms.get('vm-b')!.config.name).to.equal('web\uFFFD');
  });
});

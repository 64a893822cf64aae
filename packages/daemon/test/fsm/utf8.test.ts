import { expect } from 'chai';
import fc from 'fast-check';
import { utf8Pieces } from '../../src/fsm/utf8.js';

/** The pieces of a JSON text as the create path cuts it: one per value, and the glue. */
const piecesOf = (values: unknown[]): string[] => [
  '{"creates":[',
  ...values.flatMap((v, i) => (i > 0 ? [',', JSON.stringify(v)] : [JSON.stringify(v)])),
  ']}',
];

const expectSameBytes = (pieces: string[]) =>
  expect(utf8Pieces(pieces).equals(Buffer.from(pieces.join(''))), JSON.stringify(pieces)).to.equal(true);

describe('utf8Pieces: the UTF-8 bytes of a text in pieces, in a buffer of their size', () => {
  it('writes the bytes Buffer.from writes for ASCII, multi-byte characters and surrogate pairs', () => {
    const values = [
      { name: 'vm-1', memoryBytes: 536870912 },
      { name: 'café', note: 'ü ß ñ' }, // 2 bytes each
      { name: 'サーバー', labels: { 部署: '経理' } }, // 3 bytes each
      { name: '😀 𝄞', more: '\u{10FFFF}' }, // surrogate pairs: 4 bytes each
      '',
      [],
    ];
    const pieces = piecesOf(values);
    expectSameBytes(pieces);
    const bytes = utf8Pieces(pieces);
    expect(bytes.length).to.equal(Buffer.byteLength(pieces.join('')));
    expect(JSON.parse(bytes.toString('utf8'))).to.deep.equal({ creates: values });
  });

  it('writes a lone surrogate as Buffer.from does, inside a piece and escaped by JSON.stringify', () => {
    // Raw in a piece: U+FFFD, as Buffer.from writes it.
    expectSameBytes(['a', 'x\uD800y', '\uDC00', 'z\uDBFF']);
    expect(utf8Pieces(['\uD800']).equals(Buffer.from([0xef, 0xbf, 0xbd]))).to.equal(true);
    // Through JSON.stringify, which escapes it, so it survives the entry.
    const values = [{ name: 'lone \uD800 high' }, { name: 'lone \uDC00 low' }];
    expectSameBytes(piecesOf(values));
    expect(JSON.parse(utf8Pieces(piecesOf(values)).toString('utf8'))).to.deep.equal({ creates: values });
  });

  it('writes the same bytes as Buffer.from for any JSON values cut into pieces', () => {
    fc.assert(
      fc.property(fc.array(fc.jsonValue({ maxDepth: 3 }), { maxLength: 20 }), (values) => {
        expectSameBytes(piecesOf(values));
      }),
      { numRuns: 300 },
    );
    fc.assert(
      fc.property(fc.array(fc.string({ unit: 'binary' }), { maxLength: 10 }), (values) => {
        expectSameBytes(piecesOf(values));
      }),
      { numRuns: 300 },
    );
  });

  it('encodes no pieces, and empty ones, as nothing', () => {
    expect(utf8Pieces([]).length).to.equal(0);
    expect(utf8Pieces(['', '']).length).to.equal(0);
  });
});

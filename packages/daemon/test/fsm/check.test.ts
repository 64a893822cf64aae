import { expect } from 'chai';
import fc from 'fast-check';
import { z } from 'zod';
import { compile, defOf, safeCheck, type ZodDef } from '../../src/fsm/check.js';
import { COMMANDS } from '../../src/fsm/index.js';
import { configDiffSchema, reportSchema, vmConfigSchema } from '../../src/fsm/schemas.js';

/**
 * Compiled checks against their zod schemas: on values that are mostly right and sometimes wrong
 * anywhere (a bad type, a string or list one too long, a number out of range, a field missing or
 * extra), both accept the same values, with the same output, and name the same first bad field.
 */

const limit = (d: ZodDef, name: string) => d.checks?.find((c) => c._zod.def.check === name)?._zod.def;

const wrong = fc.oneof(
  fc.constant(undefined),
  fc.constant(null),
  fc.boolean(),
  fc.integer({ min: -3, max: 3 }),
  fc.double(),
  fc.string({ maxLength: 3 }),
  fc.constant([]),
  fc.constant({}),
);

/** Values for a schema: right most of the time, wrong one time in `1 / p`. */
function values(schema: z.ZodType, p = 12): fc.Arbitrary<unknown> {
  const d = defOf(schema);
  const right = ((): fc.Arbitrary<unknown> => {
    switch (d.type) {
      case 'string': {
        const max = limit(d, 'max_length')?.maximum ?? 20;
        const min = limit(d, 'min_length')?.minimum ?? 0;
        return fc.oneof(
          fc.string({ maxLength: Math.min(max, 8) }),
          fc.constantFrom(
            'x'.repeat(max),
            'x'.repeat(max + 1),
            'x'.repeat(min),
            'x'.repeat(Math.max(0, min - 1)),
          ),
        );
      }
      case 'number': {
        const min = limit(d, 'greater_than')?.value;
        const max = limit(d, 'less_than')?.value ?? Number.MAX_SAFE_INTEGER;
        if (!limit(d, 'number_format')) return fc.double({ noNaN: true, noDefaultInfinity: true });
        return fc.oneof(
          fc.integer({ min: 0, max: 1000 }),
          fc.constantFrom(min ?? 0, max, max + 1, -1, 0.5, 2 ** 53),
        );
      }
      case 'boolean':
        return fc.boolean();
      case 'enum':
        return fc.oneof(fc.constantFrom(...Object.values(d.entries!)), fc.constant('NOT_ONE'));
      case 'array': {
        const max = limit(d, 'max_length')?.maximum ?? 4;
        const item = values(d.element!, p * 2);
        const within = fc.array(item, { maxLength: Math.min(max, 3) });
        // One too many, where that is few enough to make (the lists of thousands are not).
        if (max > 20) return within;
        return fc.oneof(within, fc.array(item, { minLength: max + 1, maxLength: max + 1 }));
      }
      case 'object': {
        const fields = Object.fromEntries(Object.entries(d.shape!).map(([k, v]) => [k, values(v, p * 2)]));
        // An optional field is sometimes absent, sometimes given (undefined among its values).
        const requiredKeys = Object.keys(fields).filter((k) => defOf(d.shape![k]!).type !== 'optional');
        return fc
          .tuple(
            fc.record(fields, { requiredKeys }),
            fc.option(fc.dictionary(fc.constantFrom('extra', 'x'), wrong), { nil: undefined }),
          )
          .map(([r, extra]) => ({ ...extra, ...r }));
      }
      case 'record':
        return fc.dictionary(
          fc.oneof(fc.string({ maxLength: 4 }), fc.constant('k'.repeat(256))),
          values(d.valueType!, p * 2),
          { maxKeys: 3 },
        );
      case 'default':
      case 'optional':
        return fc.oneof(fc.constant(undefined), values(d.innerType!, p));
      default:
        throw new Error(`no values for zod ${d.type}`);
    }
  })();
  return fc.oneof({ arbitrary: right, weight: p }, { arbitrary: wrong, weight: 1 });
}

function agrees(schema: z.ZodType, runs = 2_000): void {
  const check = compile(schema);
  fc.assert(
    fc.property(values(schema, 40), (v) => {
      const want = schema.safeParse(v);
      const got = safeCheck(check, v);
      expect(got.success, JSON.stringify(want.error?.issues[0] ?? null)).to.equal(want.success);
      if (want.success && got.success) expect(got.data).to.deep.equal(want.data);
      if (!want.success && !got.success) expect(got.path).to.deep.equal(want.error.issues[0]!.path);
    }),
    { numRuns: runs },
  );
}

describe('compiled checks answer as their zod schemas', () => {
  it('a VM configuration', () => agrees(vmConfigSchema));
  it("a host's report of a VM", () => agrees(reportSchema));
  it('a VM configuration as its differences from the base', () => agrees(configDiffSchema));
  for (const [type, def] of COMMANDS) if (def.check) it(`the ${type} command`, () => agrees(def.schema, 300));
  it("the commands of a VM's life are compiled (each is applied on every replica)", () => {
    for (const type of ['vm.create_compact', 'vm.observed', 'vm.place', 'vm.change_state', 'op.result'])
      expect(COMMANDS.get(type)!.check, type).to.be.a('function');
    for (const type of ['request', 'start', 'progress', 'decide', 'fall_back', 'finish'])
      expect(COMMANDS.get(`migration.${type}`)!.check, type).to.be.a('function');
  });

  it('refuses to compile a schema feature it does not know, instead of letting it through', () => {
    expect(() => compile(z.object({ a: z.string().regex(/^a/) }))).to.throw(/string_format/);
    expect(() => compile(z.union([z.string(), z.number()]))).to.throw(/union/);
  });
});

import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import protobuf from 'protobufjs';
import { PROTO_FILES } from '@hyperfarm/api';

const protoDir = fileURLToPath(new URL('../../proto', import.meta.url));

/** The proto is the API's reference: every service, method, message, field, enum and value says what it is. */
describe('the API contract documents itself', () => {
  it('has a comment on every service, rpc, message, field, enum and enum value', () => {
    const root = new protobuf.Root();
    root.resolvePath = (_origin, target) =>
      target.startsWith('google/') || target.startsWith('/') ? target : join(protoDir, target);
    root.loadSync(
      PROTO_FILES.map((f) => join(protoDir, f)),
      { alternateCommentMode: true, keepCase: true },
    );
    const missing: string[] = [];
    const visit = (ns: protobuf.NamespaceBase) => {
      for (const obj of ns.nestedArray) {
        if (!obj.fullName.startsWith('.hyperfarm.')) {
          if (obj instanceof protobuf.Namespace) visit(obj);
          continue;
        }
        const isRequestOrResponse = /(Request|Response)$/.test(obj.name);
        if (obj instanceof protobuf.Service) {
          for (const m of obj.methodsArray) if (!m.comment) missing.push(`rpc ${m.fullName}`);
        } else if (obj instanceof protobuf.Type) {
          // Request and response wrappers are documented by their rpc; their fields are not.
          if (!obj.comment && !isRequestOrResponse) missing.push(`message ${obj.fullName}`);
          for (const f of obj.fieldsArray) if (!f.comment) missing.push(`field ${f.fullName}`);
        } else if (obj instanceof protobuf.Enum) {
          if (!obj.comment) missing.push(`enum ${obj.fullName}`);
          for (const [name] of Object.entries(obj.values)) {
            if (!obj.comments[name] && !name.endsWith('_UNSPECIFIED'))
              missing.push(`enum value ${obj.fullName}.${name}`);
          }
        }
        if (obj instanceof protobuf.Namespace) visit(obj);
      }
    };
    visit(root);
    expect(missing, `undocumented:\n  ${missing.join('\n  ')}`).to.deep.equal([]);
  });
});

import { join } from 'node:path';
import protobuf from 'protobufjs';

/**
 * The shape of the API contract that clients depend on: every message's fields (number, type,
 * repeated or map), every enum's values, every service's methods. Field names and numbers, once
 * published, keep their meaning for good.
 */
export interface ProtoShape {
  messages: Record<string, Record<string, string>>;
  enums: Record<string, Record<string, number>>;
  services: Record<string, Record<string, string>>;
}

export function protoShape(dir: string, files: readonly string[]): ProtoShape {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) =>
    target.startsWith('google/') || target.startsWith('/') ? target : join(dir, target);
  root.loadSync(
    files.map((f) => join(dir, f)),
    { keepCase: true },
  );
  root.resolveAll();
  const shape: ProtoShape = { messages: {}, enums: {}, services: {} };
  const visit = (ns: protobuf.NamespaceBase): void => {
    for (const obj of ns.nestedArray) {
      if (obj instanceof protobuf.Type && obj.fullName.startsWith('.hyperfarm.')) {
        shape.messages[obj.fullName] = Object.fromEntries(
          obj.fieldsArray.map((f) => [
            f.name,
            `${f.id} ${f.repeated ? 'repeated ' : ''}${f instanceof protobuf.MapField ? `map<${f.keyType},${f.type}>` : f.type}${f.partOf ? ` oneof ${f.partOf.name}` : ''}`,
          ]),
        );
      } else if (obj instanceof protobuf.Enum && obj.fullName.startsWith('.hyperfarm.')) {
        shape.enums[obj.fullName] = { ...obj.values };
      } else if (obj instanceof protobuf.Service && obj.fullName.startsWith('.hyperfarm.')) {
        shape.services[obj.fullName] = Object.fromEntries(
          obj.methodsArray.map((m) => [
            m.name,
            `${m.requestStream ? 'stream ' : ''}${m.requestType} -> ${m.responseStream ? 'stream ' : ''}${m.responseType}`,
          ]),
        );
      }
      if (obj instanceof protobuf.Namespace) visit(obj);
    }
  };
  visit(root);
  return shape;
}

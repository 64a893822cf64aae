import { ClassicLevel } from 'classic-level';
import type { VmRecord } from '../engine/engine.js';

/**
 * VM records in LevelDB under `vm/<id>`. Each batch is synced before the call that caused it is
 * acknowledged, so an acknowledged create or state change survives a crash.
 */
export class VmStore {
  /** Runs after each synced batch with the VMs it touched; the batch's writer waits for it. */
  afterWrite: ((vmIds: Set<string>) => Promise<void>) | undefined;

  private constructor(private readonly db: ClassicLevel<string, string>) {}

  private async written(keys: Iterable<string>): Promise<void> {
    if (!this.afterWrite) return;
    const ids = new Set<string>();
    for (const key of keys) {
      const [kind, id] = key.split('/');
      if (id && (kind === 'vm' || kind === 'ckpt' || kind === 'ckptcur')) ids.add(id);
    }
    if (ids.size > 0) await this.afterWrite(ids);
  }

  static async open(path: string): Promise<VmStore> {
    const db = new ClassicLevel<string, string>(path, { valueEncoding: 'utf8' });
    await db.open();
    return new VmStore(db);
  }

  async loadAll(): Promise<VmRecord[]> {
    const out: VmRecord[] = [];
    for await (const [, value] of this.db.iterator({ gte: 'vm/', lt: 'vm0' }))
      out.push(JSON.parse(value) as VmRecord);
    return out;
  }

  async write(records: readonly VmRecord[], deleted: readonly string[]): Promise<void> {
    if (records.length === 0 && deleted.length === 0) return;
    const ops = [
      ...records.map((r) => ({ type: 'put' as const, key: `vm/${r.id}`, value: JSON.stringify(r) })),
      ...deleted.map((id) => ({ type: 'del' as const, key: `vm/${id}` })),
    ];
    await this.db.batch(ops, { sync: true });
    await this.written(ops.map((o) => o.key));
  }

  /** Values under a key prefix ("ckpt/<vm>/"), in key order. */
  async list<T>(prefix: string): Promise<T[]> {
    const out: T[] = [];
    for await (const [, value] of this.db.iterator({ gte: prefix, lt: `${prefix}\uffff` }))
      out.push(JSON.parse(value) as T);
    return out;
  }

  async get<T>(key: string): Promise<T | undefined> {
    const value = await this.db.get(key);
    return value === undefined ? undefined : (JSON.parse(value) as T);
  }

  /** Puts (value defined) and deletes (undefined) in one synced batch. */
  async apply(changes: readonly (readonly [string, unknown])[]): Promise<void> {
    if (changes.length === 0) return;
    await this.db.batch(
      changes.map(([key, value]) =>
        value === undefined
          ? { type: 'del' as const, key }
          : { type: 'put' as const, key, value: JSON.stringify(value) },
      ),
      { sync: true },
    );
    await this.written(changes.map(([key]) => key));
  }

  close(): Promise<void> {
    return this.db.close();
  }
}

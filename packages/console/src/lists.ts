import { byText, name, vmState } from './model.js';
import type { Checkpoint, Vm } from './wire.js';

/** The console's lists as pure functions: the VM table's filter and order, the snapshot tree. */

export type Column = 'name' | 'state' | 'host' | 'memory' | 'cpu' | 'uptime';

const SORT_KEY: Record<Column, (vm: Vm) => string | number> = {
  name: (vm) => name(vm).toLowerCase(),
  state: (vm) => vmState(vm.status?.state),
  host: (vm) => vm.status?.hostId ?? '',
  memory: (vm) => vm.config?.memoryBytes ?? 0,
  cpu: (vm) => vm.status?.cpuPercent ?? 0,
  uptime: (vm) => vm.status?.uptimeMs ?? 0,
};

/** The VMs matching a filter, sorted: pure, so the table's rules are tested without a browser. */
export function filterVms(
  vms: Iterable<Vm>,
  f: { text: string; state: string; host: string },
  sort: { column: Column; descending: boolean },
): Vm[] {
  const text = f.text.trim().toLowerCase();
  const out = [...vms].filter(
    (vm) =>
      (!f.state || vm.status?.state === f.state) &&
      (!f.host || (vm.status?.hostId ?? '') === (f.host === '-' ? '' : f.host)) &&
      (!text ||
        name(vm).toLowerCase().includes(text) ||
        vm.id.toLowerCase().includes(text) ||
        Object.entries(vm.config?.labels ?? {}).some(([k, v]) => `${k}=${v}`.toLowerCase().includes(text))),
  );
  const key = SORT_KEY[sort.column];
  const dir = sort.descending ? -1 : 1;
  return out.sort((a, b) => {
    const x = key(a);
    const y = key(b);
    const c = typeof x === 'number' && typeof y === 'number' ? x - y : byText(String(x), String(y));
    return c !== 0 ? c * dir : byText(name(a), name(b));
  });
}

export interface TreeNode {
  checkpoint: Checkpoint;
  children: TreeNode[];
}

/** Checkpoints linked by parent into a forest, each level by creation time. */
export function checkpointTree(list: Checkpoint[]): TreeNode[] {
  const nodes = new Map(list.map((c) => [c.id, { checkpoint: c, children: [] as TreeNode[] }]));
  const roots: TreeNode[] = [];
  for (const n of nodes.values()) {
    const parent = nodes.get(n.checkpoint.parentId);
    (parent ? parent.children : roots).push(n);
  }
  const order = (ns: TreeNode[]) => {
    ns.sort((a, b) => a.checkpoint.createdAtMs - b.checkpoint.createdAtMs);
    ns.forEach((n) => order(n.children));
  };
  order(roots);
  return roots;
}

import {
  ApiError,
  failedPrecondition,
  invalidArgument,
  normalizeVmConfig,
  validateVmConfig,
  type pb,
} from '@hyperfarm/api';
import { guestOsList } from './catalog.js';

export { checkName } from '@hyperfarm/api';

export type VmConfig = pb.VmConfig__Output;
export type LimitsProfile = pb.LimitsProfile__Output;

/**
 * VM ids name folders, so the rule keeps them to one plain file name: 1 to 128 letters, digits,
 * '-', '_' or '.', not starting with '.' (no '.', '..' or hidden names).
 */
const ID_RE = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/;

/** Refuses an id that could not name a VM's folder (INVALID_ARGUMENT naming `field`). */
export function checkId(field: string, id: string): void {
  if (!ID_RE.test(id)) {
    throw invalidArgument(
      field,
      `must be 1 to 128 letters, digits, '-', '_' or '.', not starting with '.' (got ${id.length} characters)`,
    );
  }
}

/** Fills the proto's defaults (the contract's rules live in @hyperfarm/api). */
export const normalizeConfig = normalizeVmConfig;

const CATALOG: ReadonlyMap<string, pb.GuestOs__Output> = new Map(guestOsList().map((g) => [g.id, g]));

/**
 * Checks a configuration against this host's limits profile and its guest catalog. Every refusal
 * names the field (a dotted path under `prefix`) and the reason. Throws INVALID_ARGUMENT.
 */
export function validateConfig(c: VmConfig, limits: LimitsProfile, prefix = 'config'): void {
  validateVmConfig(c, { guests: CATALOG, limits }, prefix);
}

/** The same checks at start time: what passed at create may not pass any more (profile changed). */
export function revalidateForStart(vmName: string, c: VmConfig, limits: LimitsProfile): void {
  try {
    validateConfig(c, limits);
  } catch (err) {
    if (err instanceof ApiError) throw failedPrecondition(`cannot start VM '${vmName}': ${err.message}`);
    throw err;
  }
}

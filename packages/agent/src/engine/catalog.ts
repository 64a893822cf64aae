import type { pb } from '@hyperfarm/api';

const GIB = 1024 ** 3;

/** A guest the catalog knows, with what the model needs beyond the wire type. */
export interface GuestOsEntry extends pb.GuestOs__Output {
  /** How long the guest takes to boot when the VM config does not say. */
  defaultBootMs: number;
}

function guest(
  id: string,
  displayName: string,
  bits: 32 | 64,
  maxVcpus: number,
  integrationServicesAvailable: boolean,
  defaultBootMs: number,
): GuestOsEntry {
  return {
    id,
    displayName,
    architectureBits: bits,
    maxVcpus,
    integrationServicesAvailable,
    // A 32-bit guest addresses at most 4 GiB; for a 64-bit one the limits profile binds first
    // (2 TiB is what the largest x64 editions of the time addressed).
    maxMemoryBytes: bits === 32 ? 4 * GIB : 2048 * GIB,
    defaultBootMs,
  };
}

/**
 * The guests Hyper-V 1.0 (Windows Server 2008, June 2008) supported, with the virtual processor
 * counts of Microsoft's support list (KB954958); sources are cited in docs/agent.md. The last
 * entry is not a supported guest: it stands for any OS without integration services, so the
 * emulated-device path and the refusal of synthetic devices can be exercised.
 */
export const GUEST_CATALOG: readonly GuestOsEntry[] = [
  guest('windows-server-2008-x64', 'Windows Server 2008 x64', 64, 4, true, 30_000),
  guest('windows-server-2008-x86', 'Windows Server 2008 x86', 32, 4, true, 30_000),
  guest('windows-server-2003-sp2-x64', 'Windows Server 2003 SP2 x64', 64, 2, true, 25_000),
  guest('windows-server-2003-sp2-x86', 'Windows Server 2003 SP2 x86', 32, 2, true, 25_000),
  guest('sles-10-sp1-x64', 'SUSE Linux Enterprise Server 10 SP1 x64', 64, 1, true, 20_000),
  guest('sles-10-sp1-x86', 'SUSE Linux Enterprise Server 10 SP1 x86', 32, 1, true, 20_000),
  guest('windows-vista-sp1-x86', 'Windows Vista SP1 x86', 32, 2, true, 35_000),
  guest('windows-xp-sp3-x86', 'Windows XP Professional SP3 x86', 32, 2, true, 20_000),
  guest('other-x86', 'Other x86 operating system (no integration services)', 32, 1, false, 15_000),
];

const byId = new Map(GUEST_CATALOG.map((g) => [g.id, g]));

export function findGuestOs(id: string): GuestOsEntry | undefined {
  return byId.get(id);
}

/** The catalog as the wire shows it. */
export function guestOsList(): pb.GuestOs__Output[] {
  return GUEST_CATALOG.map(({ defaultBootMs: _boot, ...wire }) => wire);
}

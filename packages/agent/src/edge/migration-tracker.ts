import type { pb } from '@hyperfarm/api';

/** Finished migrations remembered for GetMigrationStatus. */
const KEPT = 1_000;

export type Role = 'MIGRATION_ROLE_SOURCE' | 'MIGRATION_ROLE_TARGET';
export type Stage = pb.MigrationStage__Output;

/**
 * Where each migration stands on this host, by id: what GetMigrationStatus answers, and what
 * lets a repeated call (a new leader driving the same migration) join the work under way
 * instead of starting it again. Held in memory: after a restart a host knows nothing of the
 * migrations it took part in, and says so (role NONE); its VMs are then as a crash left them.
 */
export class MigrationTracker {
  private readonly entries = new Map<string, pb.MigrationStatus__Output>();

  get(id: string): pb.MigrationStatus__Output | undefined {
    return this.entries.get(id);
  }

  status(id: string): pb.MigrationStatus__Output {
    return (
      this.entries.get(id) ?? {
        migrationId: id,
        vmId: '',
        role: 'MIGRATION_ROLE_NONE',
        stage: 'MIGRATION_STAGE_UNSPECIFIED',
        generation: 0,
        bytesTransferred: 0,
        rounds: 0,
        downtimeMs: 0,
        sha256: '',
        throttlePercent: 0,
        message: 'this host knows nothing of the migration',
      }
    );
  }

  start(id: string, vmId: string, role: Role, generation: number): pb.MigrationStatus__Output {
    const entry: pb.MigrationStatus__Output = {
      migrationId: id,
      vmId,
      role,
      stage: 'MIGRATION_STAGE_TRANSFERRING',
      generation,
      bytesTransferred: 0,
      rounds: 0,
      downtimeMs: 0,
      sha256: '',
      throttlePercent: 0,
      message: '',
    };
    this.entries.delete(id);
    this.entries.set(id, entry);
    this.trim();
    return entry;
  }

  update(id: string, change: Partial<pb.MigrationStatus__Output>): void {
    const e = this.entries.get(id);
    if (e) Object.assign(e, change);
  }

  private trim(): void {
    for (const [id, e] of this.entries) {
      if (this.entries.size <= KEPT) return;
      const stage = e.stage;
      if (stage === 'MIGRATION_STAGE_COMMITTED' || stage === 'MIGRATION_STAGE_ABORTED')
        this.entries.delete(id);
    }
  }
}

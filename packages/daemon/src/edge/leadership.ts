import type { Logger } from '@hyperfarm/api';
import type { ControllerRunner } from './controller-runner.js';
import type { Timers } from './timers.js';

/** What leadership needs of Raft: a read barrier. */
export interface ReadBarrier {
  read(): Promise<void>;
}

/**
 * Starts the controllers when this replica becomes leader, once it has applied everything
 * committed before its term (a read barrier), and stops them when it steps down. The daemon and
 * the farm simulator (packages/sim) both run it, each with its own clock.
 */
export class Leadership {
  private raft: ReadBarrier | undefined;
  private runner: Pick<ControllerRunner, 'start' | 'stop'> | undefined;
  private leading = { is: false, term: 0 };

  constructor(
    private readonly logger: Logger,
    private readonly timers: Timers,
  ) {}

  changed(isLeader: boolean, term: number): void {
    this.leading = { is: isLeader, term };
    this.apply();
  }

  attach(raft: ReadBarrier, runner: Pick<ControllerRunner, 'start' | 'stop'>): void {
    this.raft = raft;
    this.runner = runner;
    this.apply();
  }

  detach(): void {
    this.runner?.stop();
    this.runner = undefined;
  }

  private apply(): void {
    const { raft, runner } = this;
    if (!raft || !runner) return;
    if (!this.leading.is) {
      runner.stop();
      return;
    }
    const term = this.leading.term;
    const still = () => this.leading.is && this.leading.term === term;
    raft.read().then(
      () => {
        if (still()) this.runner?.start(term);
      },
      (err: unknown) => {
        if (!still()) return;
        this.logger.warn({ err, term }, 'elected, but the first read barrier failed; trying again');
        this.timers.set(() => still() && this.apply(), 100);
      },
    );
  }
}

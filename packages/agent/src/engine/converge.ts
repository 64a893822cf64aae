/**
 * When live migration's pre-copy stops, and how hard it throttles the guest to get there: QEMU's
 * rules (migration.c, ram.c, cpu-throttle.c), as a pure function of what each round measured.
 *
 * - Stop and copy once the pages still dirty can be sent within the downtime limit at the
 *   bandwidth measured so far (QEMU's threshold_size = bandwidth × downtime_limit), or after the
 *   round limit, or when a fixed page threshold is given and met.
 * - Auto-converge: a round that dirtied more than half of what it sent is a high round; after two
 *   of them the guest's virtual processors are throttled, 20% first, then 10% more per two high
 *   rounds, up to 99%: a guest that dirties memory faster than the link moves it is slowed until
 *   the copy catches up.
 */
export interface ConvergeOptions {
  downtimeLimitMs: number;
  maxRounds: number;
  autoConverge: boolean;
  /** Stop once fewer pages than this are dirty (0: the downtime limit decides). */
  thresholdPages: number;
}

export interface RoundMeasure {
  /** Bytes the round sent and how long it took. */
  bytes: number;
  ms: number;
  /** Pages dirtied while it was sent: the next round's work. */
  dirtyPages: number;
}

export const THROTTLE_INITIAL = 20;
export const THROTTLE_INCREMENT = 10;
export const THROTTLE_MAX = 99;
/** A round is high when it dirtied more than this share of the bytes it sent (QEMU: 50%). */
const TRIGGER_SHARE = 0.5;
const PAGE_BYTES = 4096;

export class Convergence {
  throttle = 0;
  /** Bytes per ms over every round so far. */
  private sent = 0;
  private elapsed = 0;
  private highRounds = 0;

  constructor(private readonly o: ConvergeOptions) {}

  get bandwidth(): number {
    return this.elapsed > 0 ? this.sent / this.elapsed : 0;
  }

  /** After round `round` was sent: whether to stop and copy now, and the throttle to apply. */
  afterRound(round: number, m: RoundMeasure): { stop: boolean; why: string } {
    this.sent += m.bytes;
    this.elapsed += Math.max(m.ms, 0.001);
    const pending = m.dirtyPages * PAGE_BYTES;
    if (this.o.thresholdPages > 0 && m.dirtyPages < this.o.thresholdPages)
      return { stop: true, why: `${m.dirtyPages} dirty pages, under the threshold` };
    const threshold = this.bandwidth * this.o.downtimeLimitMs;
    if (this.o.thresholdPages === 0 && pending <= threshold)
      return {
        stop: true,
        why: `${m.dirtyPages} dirty pages fit the ${this.o.downtimeLimitMs} ms downtime limit`,
      };
    if (round + 1 >= this.o.maxRounds) return { stop: true, why: `round limit ${this.o.maxRounds}` };
    if (this.o.autoConverge && round > 0 && pending > m.bytes * TRIGGER_SHARE) {
      if (++this.highRounds >= 2) {
        this.highRounds = 0;
        this.throttle =
          this.throttle === 0 ? THROTTLE_INITIAL : Math.min(THROTTLE_MAX, this.throttle + THROTTLE_INCREMENT);
      }
    }
    return { stop: false, why: '' };
  }
}

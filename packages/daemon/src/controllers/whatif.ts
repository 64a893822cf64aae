import type { FarmState } from '../fsm/index.js';
import type { SchedulerOptions } from '../scheduler/plan.js';
import { planFailover, withHosts, type FailoverPlan } from './failover.js';

/**
 * "If these hosts failed now": the failover planner on a view of the state in which they are
 * Down. The same scheduler and the same rules as a real failover (priority, capacity,
 * anti-affinity, cluster storage, the threshold); nothing is committed.
 */
export function whatIfHostFailure(
  s: FarmState,
  hostIds: readonly string[],
  nowMs: number,
  opts: SchedulerOptions,
): FailoverPlan {
  const view = withHosts(s, () => true, new Set(hostIds));
  return planFailover(view, hostIds, nowMs, opts);
}

export * from './feasible.js';
export * from './plan.js';
export * from './rank.js';

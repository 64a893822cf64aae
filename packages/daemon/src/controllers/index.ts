export * from './actions.js';
export * from './hosts.js';
export * from './observed.js';
export * from './placement.js';
export * from './vms.js';
export * from './migrations.js';

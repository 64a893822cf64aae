export * from './types.js';
export * from './checker/index.js';
export * from './core/index.js';
export * from './sim/index.js';
export * from './storage/index.js';
export * from './transport/index.js';
export * from './node/index.js';

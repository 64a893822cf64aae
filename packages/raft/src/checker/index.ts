export * from './model.js';
export * from './kv-model.js';
export * from './history.js';
export * from './checker.js';

export { CorruptLogError } from './codec.js';
export {
  LevelStorage,
  type DurableState,
  type LevelStorageOptions,
  type PersistRequest,
} from './level-storage.js';
export { writeFileDurably, fsyncDir, type FileStep } from './snapshot-files.js';

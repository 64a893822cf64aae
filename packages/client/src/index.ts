export { vhdCommand, runVhd, runProgram, processIo, UsageError, type CliIo } from './cli/vhd.js';
export { farmCommand, membersCommand } from './cli/farm.js';

import { Command } from 'commander';
import { farmCommand, membersCommand } from './farm.js';
import { processIo, vhdCommand, type CliIo } from './vhd.js';
import { hostCommand } from './hosts.js';
import { vmCommand } from './vms.js';
import { opCommand, watchCommand } from './operations.js';
import { clusterCommand } from './cluster.js';
import { migrationCommand } from './migrations.js';
import { completionCommand } from './completion.js';
import { drillCommand } from './drill.js';
import { networkCommands } from './network.js';

/** The `hyperfarm` command. Each area adds its subcommand group here. */
export function hyperfarmProgram(io: CliIo = processIo): Command {
  const program = new Command('hyperfarm').description('manage a hyperfarm: a Hyper-V-style server farm');
  program.addCommand(hostCommand(io));
  program.addCommand(vmCommand(io));
  program.addCommand(migrationCommand(io));
  program.addCommand(opCommand(io));
  program.addCommand(watchCommand(io));
  program.addCommand(clusterCommand(io));
  program.addCommand(membersCommand(io));
  for (const c of networkCommands(io)) program.addCommand(c);
  program.addCommand(farmCommand(io));
  program.addCommand(drillCommand(io));
  program.addCommand(vhdCommand(io));
  program.addCommand(completionCommand(io, () => program));
  return program;
}

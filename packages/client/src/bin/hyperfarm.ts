#!/usr/bin/env node
import { Command } from 'commander';
import { farmCommand, membersCommand } from '../cli/farm.js';
import { processIo, runProgram, vhdCommand } from '../cli/vhd.js';
import { hostCommand } from '../cli/hosts.js';
import { vmCommand } from '../cli/vms.js';
import { opCommand, watchCommand } from '../cli/operations.js';
import { clusterCommand } from '../cli/cluster.js';

/** The `hyperfarm` command. Each area adds its subcommand group here. */
export function hyperfarmProgram(): Command {
  const program = new Command('hyperfarm').description('manage a hyperfarm: a Hyper-V-style server farm');
  program.addCommand(hostCommand(processIo));
  program.addCommand(vmCommand(processIo));
  program.addCommand(opCommand(processIo));
  program.addCommand(watchCommand(processIo));
  program.addCommand(clusterCommand(processIo));
  program.addCommand(farmCommand(processIo));
  program.addCommand(membersCommand(processIo));
  program.addCommand(vhdCommand(processIo));
  return program;
}

process.exitCode = await runProgram(hyperfarmProgram(), process.argv.slice(2), processIo);

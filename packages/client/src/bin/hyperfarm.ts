#!/usr/bin/env node
import { hyperfarmProgram } from '../cli/program.js';
import { processIo, runProgram } from '../cli/vhd.js';

process.exitCode = await runProgram(hyperfarmProgram(processIo), process.argv.slice(2), processIo);

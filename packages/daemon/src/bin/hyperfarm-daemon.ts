#!/usr/bin/env node
import { runProgram } from '@hyperfarm/api';
import { loadDaemonConfig } from '../config.js';
import { startDaemon } from '../server.js';

await runProgram('hyperfarm-daemon', () => startDaemon(loadDaemonConfig(process.argv.slice(2), process.env)));

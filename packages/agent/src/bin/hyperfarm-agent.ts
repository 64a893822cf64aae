#!/usr/bin/env node
import { runProgram } from '@hyperfarm/api';
import { loadAgentConfig } from '../config.js';
import { startAgent } from '../server.js';

await runProgram('hyperfarm-agent', () => startAgent(loadAgentConfig(process.argv.slice(2), process.env)));

#!/usr/bin/env node
// The installed `hyperfarm` command. It exists before the build, so `npm ci` links it into
// node_modules/.bin (a bin pointing into dist/ would be skipped on a fresh clone); it runs the
// built program.
import '../dist/bin/hyperfarm.js';

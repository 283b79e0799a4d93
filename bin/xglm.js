#!/usr/bin/env node
'use strict';
let cli;
try {
  cli = require('../dist/cli/main.js');
} catch (err) {
  if (err && err.code === 'MODULE_NOT_FOUND' && /dist[\\/]cli[\\/]main/.test(err.message)) {
    process.stderr.write("xglm: error: the TypeScript build is missing (hint: run 'npm run build:ts' in the xglm-node folder)\n");
    process.exit(1);
  }
  throw err;
}
cli.run();

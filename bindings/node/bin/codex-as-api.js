#!/usr/bin/env node
'use strict';
// The codex-as-api command: the Rust CLI run in this process by the native addon. Ctrl-C
// and SIGTERM are handled in Rust (serve drains in-flight streams, then exits 0).

let addon;
try {
  addon = require('../native.js').load();
} catch (e) {
  process.stderr.write(`${e.message}\n`);
  process.exit(1);
}
process.exitCode = addon.runCli(['codex-as-api', ...process.argv.slice(2)]);

#!/usr/bin/env node
'use strict';
// Thin launcher: the CLI is compiled TypeScript in dist/.
const path = require('node:path');
const fs = require('node:fs');
const entry = path.join(__dirname, '..', 'dist', 'cli', 'main.js');
if (!fs.existsSync(entry)) {
  process.stderr.write('ephemera: not built (E_NOT_BUILT): run `npm run build` in ' + path.join(__dirname, '..') + '\n');
  process.exit(2);
}
// `ephemera mount DIR --restartable` taking a live connection over: its callers are waiting, so
// the takeover starts before the CLI's modules load (see fusefs/restart.ts, takeoverEarly).
const argv = process.argv;
if (argv[2] === 'mount' && argv[3] && !argv[3].startsWith('-') && argv.includes('--restartable') && !argv.includes('--help')) {
  require(path.join(__dirname, '..', 'dist', 'fusefs', 'restart.js')).takeoverEarly(path.resolve(argv[3]));
}
require(entry).main(process.argv).catch((err) => {
  const message = err && err.message ? err.message : String(err);
  // Some error classes already lead their message with the code: print each code once.
  const code = err && err.code && !message.startsWith(`${err.code}:`) ? `${err.code}: ` : '';
  process.stderr.write(`ephemera: ${code}${message}\n`);
  process.exit(typeof err?.exitCode === 'number' ? err.exitCode : 1);
});

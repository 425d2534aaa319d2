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
const cli = require(entry);
cli.main(process.argv).catch((err) => process.exit(cli.reportError(err)));

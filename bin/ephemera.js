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
require(entry).main(process.argv).catch((err) => {
  process.stderr.write(`ephemera: ${err && err.code ? err.code + ': ' : ''}${err && err.message ? err.message : err}\n`);
  process.exit(typeof err?.exitCode === 'number' ? err.exitCode : 1);
});

// The caller of test/restart/takeover.test.ts: loops on the mount, every iteration needing the
// daemon (create, write, fsync, close, reopen, read back, rename, unlink), plus one long-open fd
// it writes and reads. Counts every error; writes a JSON summary when the stop file appears.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const [dir, stopFile, outFile] = process.argv.slice(2);
const SIZE = 16 * 1024;
const pattern = (i, len) => {
  const b = Buffer.alloc(len);
  for (let k = 0; k < len; k += 4) b.writeUInt32LE((i * 2654435761 + k) >>> 0, k);
  return b;
};
const long = fs.openSync(path.join(dir, 'long-open'), 'w+');
const errors = [];
let iterations = 0;
let maxStallMs = 0;
let stallStartMs = 0;
let bytesChecked = 0;
while (!fs.existsSync(stopFile)) {
  const i = iterations++;
  const t0 = Date.now();
  try {
    const name = path.join(dir, `f${i}`);
    const data = pattern(i, SIZE);
    let fd = fs.openSync(name, 'wx');
    fs.writeSync(fd, data);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = fs.openSync(name, 'r');
    const back = Buffer.alloc(SIZE);
    const n = fs.readSync(fd, back, 0, SIZE, 0);
    fs.closeSync(fd);
    if (n !== SIZE || !back.equals(data)) throw Object.assign(new Error(`f${i}: read back differs`), { code: 'EDATA' });
    fs.renameSync(name, path.join(dir, `g${i}`));
    fs.unlinkSync(path.join(dir, `g${i}`));
    const chunk = pattern(i + 1_000_000, 4096);
    const off = (i % 256) * 4096;
    fs.writeSync(long, chunk, 0, 4096, off);
    const lb = Buffer.alloc(4096);
    fs.readSync(long, lb, 0, 4096, off);
    if (!lb.equals(chunk)) throw Object.assign(new Error(`long-open fd at ${off}: read back differs`), { code: 'EDATA' });
    bytesChecked += SIZE + 4096;
  } catch (e) {
    errors.push(`${i}: ${e.code ?? ''} ${e.message}`);
    if (errors.length > 50) break;
  }
  const stall = Date.now() - t0;
  if (stall > maxStallMs) (maxStallMs = stall), (stallStartMs = t0);
}
fs.closeSync(long);
fs.writeFileSync(outFile, JSON.stringify({ iterations, errors, maxStallMs, stallStartMs, bytesChecked }));

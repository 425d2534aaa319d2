import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { FunctionContainer } from '../engine/index';
import { BenchError, errorMessage } from './errors';
import { packageRoot, runProcess, tail } from './proc';

/** Where the workload programs live inside function containers (not /tmp: that is what is measured). */
export const PAYLOAD_DIR = '/opt/ephemera-bench';
export const EPH_WORK = `${PAYLOAD_DIR}/eph_work`;

function workloadsDir(): string {
  return path.join(packageRoot(), 'bench', 'workloads');
}

/**
 * Compiles bench/workloads/eph_work.c statically (it then runs in any image) and packs it with the
 * Python workloads into a tar for `docker cp`. Cached by the sources' hash, built under a private
 * name and renamed, so concurrent runs never see half a file.
 */
export async function ensurePayload(signal?: AbortSignal): Promise<string> {
  const dir = workloadsDir();
  const files = fs.readdirSync(dir).filter((f) => /\.(c|py|sh)$/.test(f)).sort();
  const hash = createHash('sha256');
  for (const f of files) hash.update(f).update(fs.readFileSync(path.join(dir, f)));
  const key = hash.digest('hex').slice(0, 16);
  const cache = path.join(os.tmpdir(), 'ephemera-bench-payload', key);
  const tarFile = path.join(cache, 'payload.tar');
  if (fs.existsSync(tarFile)) return tarFile;
  const stage = fs.mkdtempSync(path.join(os.tmpdir(), 'ephemera-bench-stage-'));
  try {
    const inner = path.join(stage, PAYLOAD_DIR.slice(1));
    fs.mkdirSync(inner, { recursive: true });
    let cc;
    try {
      cc = await runProcess('cc', ['-O2', '-Wall', '-Wextra', '-Werror', '-static', '-o', path.join(inner, 'eph_work'), path.join(dir, 'eph_work.c')], {
        signal,
        timeoutMs: 120_000,
        timeoutCode: 'E_CC',
      });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new BenchError('E_CC', 'cc not found: install build-essential (scripts/setup.sh does)');
      throw err;
    }
    if (cc.exitCode !== 0) throw new BenchError('E_CC', `cc failed on eph_work.c: ${tail(cc.stderr)}`);
    for (const f of files.filter((f) => !f.endsWith('.c'))) fs.copyFileSync(path.join(dir, f), path.join(inner, f));
    fs.mkdirSync(cache, { recursive: true });
    const partial = `${tarFile}.${process.pid}.tmp`;
    const tar = await runProcess('tar', ['-C', stage, '--owner=0', '--group=0', '-cf', partial, PAYLOAD_DIR.slice(1)], { timeoutMs: 60_000 });
    if (tar.exitCode !== 0) throw new BenchError('E_CC', `packing the workload payload: ${tail(tar.stderr)}`);
    fs.renameSync(partial, tarFile);
    return tarFile;
  } finally {
    fs.rmSync(stage, { recursive: true, force: true });
  }
}

/** Copies the payload into a running container (through dockerd: the function user needs no rights). */
export async function installPayload(fc: FunctionContainer, tarFile: string): Promise<void> {
  try {
    await fc.container.putArchive(tarFile, { path: '/' });
  } catch (err) {
    throw new BenchError('E_TARGET_SETUP', `copying the workload programs into ${fc.name}: ${errorMessage(err)}`, { cause: err });
  }
}

import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { Engine, isEngineError, type EngineOptions } from '../../engine/index';
import { dockerdStartUnavailable, skipping } from './capabilities';

/** The same files scripts/setup.sh uses, so scripts/test.sh stops a daemon a test had to start. */
export const DOCKERD_PID_FILE = '/run/ephemera-dockerd.pid';
export const DOCKERD_LOG = '/var/log/ephemera-dockerd.log';

export interface DockerAvailability {
  engine: Engine | undefined;
  /** Why Docker tests are skipped; undefined when Docker is usable. */
  skipReason: string | undefined;
}

async function tryConnect(options: EngineOptions): Promise<Engine | undefined> {
  try {
    return await Engine.connect(options);
  } catch (err) {
    if (isEngineError(err, 'E_NO_DOCKER')) return undefined;
    throw err;
  }
}

/**
 * Connects to dockerd; when none answers and we are root with `dockerd` installed, starts one (and
 * records it in the pid file so the test script stops it). Skips — loudly — only when Docker truly
 * cannot run here.
 */
export async function ensureDocker(options: EngineOptions = {}): Promise<DockerAvailability> {
  const first = await tryConnect(options);
  if (first) return { engine: first, skipReason: undefined };
  const dockerd = spawnSync('sh', ['-c', 'command -v dockerd'], { encoding: 'utf8' }).stdout.trim();
  if (!dockerd) return skip('dockerd is not installed (run scripts/setup.sh)');
  const cannotStart = dockerdStartUnavailable();
  if (cannotStart) return skip(cannotStart);
  const log = openSync(DOCKERD_LOG, 'a');
  const child = spawn(dockerd, [], { detached: true, stdio: ['ignore', log, log] });
  closeSync(log);
  child.unref();
  if (child.pid !== undefined && !existsSync(DOCKERD_PID_FILE)) writeFileSync(DOCKERD_PID_FILE, `${child.pid}\n`);
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const engine = await tryConnect(options);
    if (engine) return { engine, skipReason: undefined };
    await new Promise((r) => setTimeout(r, 500));
  }
  return skip(`started dockerd (pid ${child.pid}) but it did not answer within 30 s; see ${DOCKERD_LOG}`);
}

function skip(reason: string): DockerAvailability {
  return { engine: undefined, skipReason: skipping('Docker tests', reason) };
}

/** A label value unique to one test file's run, so teardown removes exactly what it created. */
export function testRunLabels(area: string): Record<string, string> {
  return { 'ephemera.test': `${area}-${process.pid}-${randomBytes(3).toString('hex')}` };
}

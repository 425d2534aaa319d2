import { spawnSync } from 'node:child_process';
import { chmodSync, cpSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { skipping, switchUserUnavailable } from '../support/capabilities';

/**
 * README's commands run as root with no sudo (a fresh Debian machine has none). Every script
 * checks that first, through scripts/lib.sh, and tells a non-root user how to become root.
 * Run as `nobody` on a copy of scripts/ (the checkout itself may not be readable by nobody).
 */
const REPO = path.resolve(__dirname, '../..');
const SCRIPTS = ['demo.sh', 'setup.sh', 'test.sh', 'bench-all.sh', 'stop-dockerd.sh', 'sweep-test-leftovers.sh'];
// The scripts are run as nobody through setpriv, which needs to switch uid and gid.
const cannot = switchUserUnavailable();
if (cannot) skipping('the scripts root-check test (runs the scripts as nobody)', cannot);

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

describe.skipIf(cannot !== undefined)('scripts/ as a user who is not root', () => {
  it('covers every script in scripts/ (a new one must be added here)', () => {
    const scripts = readdirSync(path.join(REPO, 'scripts')).filter((f) => f.endsWith('.sh') && f !== 'lib.sh');
    expect(scripts.sort()).toEqual([...SCRIPTS].sort());
  });

  it.each(SCRIPTS)('%s refuses before doing anything, saying how to run it as root (su -, no sudo needed)', (script) => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ephemera-root-check-'));
    dirs.push(dir);
    chmodSync(dir, 0o755);
    cpSync(path.join(REPO, 'scripts'), path.join(dir, 'scripts'), { recursive: true });
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'bash', `scripts/${script}`], {
      cwd: dir,
      encoding: 'utf8',
      timeout: 30_000,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/nonexistent', DOCKERD_PID_FILE: path.join(dir, 'dockerd.pid') },
    });
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain(`scripts/${script} must run as root`);
    expect(r.stderr).toContain(`run as root: bash scripts/${script}`);
    expect(r.stderr).toContain('su -');
    expect(r.stderr).toContain(`cd ${dir} && bash scripts/${script}`);
    // Nothing was made beside the scripts (no npm install, no pid file, no logs).
    expect(readdirSync(dir)).toEqual(['scripts']);
  });
});

import fs from 'node:fs';
import { cleanupNodeDaemon } from '../../fusefs/daemon';

/**
 * Removes what a node daemon left under `stateDir` (mounts, tier images, loop devices), then
 * `removeDir` (the state dir itself by default). Best effort: a run that failed before the
 * daemon started has nothing to clean.
 */
export function removeNodeDaemonState(stateDir: string, removeDir: string = stateDir): void {
  try {
    cleanupNodeDaemon(stateDir);
  } catch {
    /* nothing left */
  }
  fs.rmSync(removeDir, { recursive: true, force: true });
}

import * as fs from 'node:fs';
import * as path from 'node:path';
import { isMountPoint, listMountPoints, unmountQuietly } from '../memtier';
import { removeMountLeftovers } from './daemon';
import { DaemonError } from './errors';
import { daemonPaths, type DaemonPaths } from './paths';
import { isDaemonAlive, readDaemonRecord, readRecords } from './state';

export interface CleanupReport {
  stateDir: string;
  unmounted: string[];
  removed: string[];
  remaining: string[];
}

/**
 * Removes everything a dead node daemon left under its state dir: its FUSE mounts (dead ones answer
 * ENOTCONN; umount -l detaches them), the memory-tier tmpfs mounts, spill dirs, mount points it
 * made, the shared parent bind mount it made, records, socket, and the state dir itself. Refuses
 * while the daemon is alive (stop it first): pulling mounts from under it would strand its clients.
 */
export function cleanupNodeDaemon(stateDir?: string, overrides: { mountsDir?: string } = {}): CleanupReport {
  let paths: DaemonPaths = daemonPaths(stateDir, overrides);
  const report: CleanupReport = { stateDir: paths.stateDir, unmounted: [], removed: [], remaining: [] };
  if (!fs.existsSync(paths.stateDir)) return report;
  const daemon = readDaemonRecord(paths.daemonRecord);
  if (daemon && isDaemonAlive(daemon.pid)) {
    throw new DaemonError('E_DAEMON', `the node daemon (pid ${daemon.pid}) is running on ${paths.stateDir}: stop it first`);
  }
  if (daemon) paths = daemonPaths(stateDir, { socket: daemon.socket, mountsDir: overrides.mountsDir ?? daemon.mountsDir });
  const unmount = (dir: string) => {
    if (!isMountPoint(dir)) return;
    unmountQuietly(dir);
    report.unmounted.push(dir);
  };
  const { records, broken } = readRecords(paths.recordsDir);
  for (const record of records) {
    unmount(record.path);
    unmount(record.fusePath);
    unmount(record.memoryDir);
    removeMountLeftovers(record);
    fs.rmSync(path.join(paths.recordsDir, `${record.id}.json`), { force: true });
    report.removed.push(record.path, record.spillDir);
  }
  for (const b of broken) {
    fs.rmSync(b.file, { force: true });
    report.removed.push(b.file);
  }
  // Whatever is still mounted below our dirs without a record (a crash between mount and record).
  for (const root of [paths.mountsDir, paths.memoryRoot, paths.fuseRoot, paths.spillRoot]) {
    for (const mp of listMountPoints().filter((p) => p.startsWith(root + '/'))) unmount(mp);
  }
  if (daemon?.madeParentMount) unmount(paths.mountsDir);
  for (const dir of [paths.memoryRoot, paths.fuseRoot, paths.spillRoot, paths.recordsDir]) {
    if (fs.existsSync(dir) && !listMountPoints().some((p) => p.startsWith(dir + '/'))) {
      fs.rmSync(dir, { recursive: true, force: true });
      report.removed.push(dir);
    }
  }
  // Mount points left under the parent are empty dirs the daemon made; anything else stays.
  if (fs.existsSync(paths.mountsDir) && !isMountPoint(paths.mountsDir)) {
    for (const name of fs.readdirSync(paths.mountsDir)) {
      try {
        fs.rmdirSync(path.join(paths.mountsDir, name));
      } catch {
        /* not empty: not ours to delete */
      }
    }
    try {
      fs.rmdirSync(paths.mountsDir);
      report.removed.push(paths.mountsDir);
    } catch {
      /* not empty */
    }
  }
  fs.rmSync(paths.socket, { force: true });
  fs.rmSync(paths.daemonRecord, { force: true });
  try {
    fs.rmdirSync(paths.stateDir);
    report.removed.push(paths.stateDir);
  } catch {
    report.remaining = fs.existsSync(paths.stateDir) ? fs.readdirSync(paths.stateDir) : [];
  }
  return report;
}

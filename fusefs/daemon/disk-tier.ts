import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FusefsError } from '../errors';
import { isMountPoint, unmountNow } from '../memtier';
import { stderrOf } from './memory-tier';

/**
 * The sparse image's apparent size: twice the quota plus slack, so the quota can be raised to about
 * twice its size at run time without an online resize (which needs CAP_SYS_RESOURCE, not always
 * held), and ext4's metadata (-i 4096: 6.25 %) always fits. Only what is written takes disk space;
 * the reserve's extents touch the block bitmaps of the groups it covers, a few KiB per 128 MiB.
 */
const IMAGE_FACTOR = 2;
const IMAGE_SLACK_BYTES = 64 << 20;
const RESERVE = '.quota-reserve';

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 30_000, encoding: 'utf8' }).trim();
}

/**
 * A mount's disk tier on a file system of its own, sized to the mount's size quota: a sparse ext4
 * image on a loop device mounted at `<spillDir>/tier`. Under passthrough the kernel writes a
 * disk-tier file without asking the daemon, so only a file system of that size can answer ENOSPC to
 * a file growing while open, as a sized tmpfs does; without it a runaway writer fills the node's disk.
 * The loop device does direct I/O, so the image adds no second page cache. Measured with
 * bench/disk-tier-probe.sh (2 × 128 MiB, 500k random 8 KiB reads then writes, 150 MiB v1 cgroup,
 * interleaved, s): plain directory 23.3 / 14.0 / 43.4 / 48.1, this image 49.9 / 13.9 / 94.7 / 32.4,
 * the image with a journal 27.7 / 84.9, a buffered loop 17.8 / 13.6 / 18.8 / 13.8. The buffered loop
 * wins only because its backing file's page cache lands on the root cgroup on v1 (loop charges the
 * bio's blkcg, another hierarchy): memory outside the container's limit, which overlay does not get. The usable size is trimmed to the quota exactly by a
 * reserve file at the root (spill files are O_TMPFILE or `<ino>.spill`, never a user path), which
 * also lets the quota go down at run time, and up to about twice its first size; beyond that the
 * image is grown online (resize2fs, where the daemon holds CAP_SYS_RESOURCE).
 */
export class SizedDiskTier {
  private constructor(
    readonly dir: string,
    private readonly image: string,
    private readonly device: string,
  ) {}

  /** The directory the store keeps its disk-tier files in (a mount point of its own). */
  static dirFor(spillDir: string): string {
    return path.join(spillDir, 'tier');
  }

  /**
   * Removes a disk tier from `spillDir`: its file system (unmounted at once when nothing holds it,
   * so its page cache, charged to the container that wrote it, goes now; else lazily; the loop
   * device, autoclear, goes with it), its image and its mount point. Also what a dead daemon left: its files were O_TMPFILE
   * or reachable only through that daemon, so nothing anyone can reach is lost.
   */
  static remove(spillDir: string): void {
    const dir = SizedDiskTier.dirFor(spillDir);
    unmountNow(dir);
    fs.rmSync(`${dir}.img`, { force: true });
    try {
      if (!isMountPoint(dir)) fs.rmdirSync(dir);
    } catch {
      /* absent, or a lazy unmount still busy: cleanup retries */
    }
  }

  static create(spillDir: string, sizeQuota: number): SizedDiskTier {
    const dir = SizedDiskTier.dirFor(spillDir);
    const image = `${dir}.img`;
    SizedDiskTier.remove(spillDir); // a dead daemon's leftover
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    let device = '';
    try {
      fs.writeFileSync(image, '', { mode: 0o600 });
      fs.truncateSync(image, imageBytes(sizeQuota));
      // No journal (the tier's contents do not outlive the daemon), no reserved blocks, inode
      // tables left uninitialised (noinit_itable below keeps the kernel from zeroing them later).
      run('mkfs.ext4', ['-q', '-F', '-b', '4096', '-m', '0', '-i', '4096', '-O', '^has_journal', '-E', 'lazy_itable_init=1,lazy_journal_init=1,nodiscard', image]);
      // 4 KiB logical sectors, the file system's block: with the default 512 B the same random
      // 8 KiB writes under memory pressure took 1.6-1.8x as long (bench/disk-tier-probe.sh, 2 x 128
      // MiB in 150 MiB: writes 76.3 / 68.8 s at 512 B, 44.0 / 43.0 s at 4 KiB, a host directory
      // 37.5 / 46.0 s).
      device = run('losetup', ['--find', '--show', '--sector-size', '4096', '--direct-io=on', image]);
      run('mount', ['-t', 'ext4', '-o', 'noinit_itable,nodiscard,noatime', device, dir]);
      // Detaching a mounted loop device only marks it autoclear: it goes with the unmount.
      run('losetup', ['-d', device]);
      fs.chmodSync(dir, 0o700);
      const tier = new SizedDiskTier(dir, image, device);
      tier.resize(sizeQuota);
      return tier;
    } catch (e) {
      SizedDiskTier.remove(spillDir);
      if (device) {
        try {
          run('losetup', ['-d', device]);
        } catch {
          /* not attached, or already autoclear */
        }
      }
      if (e instanceof FusefsError) throw e;
      throw new FusefsError('E_MOUNT', `cannot make the disk tier's ${sizeQuota}-byte file system on ${dir}: ${stderrOf(e)}`);
    }
  }

  /** The tier of a mount taken over from its holder: still mounted, its files the mount's. Undefined when there is none. */
  static adopt(spillDir: string): SizedDiskTier | undefined {
    const dir = SizedDiskTier.dirFor(spillDir);
    if (!isMountPoint(dir)) return undefined;
    const device = run('findmnt', ['-n', '-o', 'SOURCE', '--mountpoint', dir]);
    return new SizedDiskTier(dir, `${dir}.img`, device);
  }

  /** Bytes the tier's files hold (what counts against the quota). */
  usedBytes(): number {
    const s = fs.statfsSync(this.dir);
    return Math.max(0, (s.blocks - s.bfree) * s.bsize - this.reserveBytes());
  }

  /**
   * Sets the usable size to `sizeQuota`: grows the image when it is too small, then sizes the
   * reserve to take the rest. A quota below what the files hold is refused, as tmpfs refuses it.
   */
  resize(sizeQuota: number): void {
    if (sizeQuota === 0) {
      this.setReserve(0); // no quota: the whole image
      return;
    }
    const used = this.usedBytes();
    if (sizeQuota < used) {
      throw new FusefsError('E_BAD_OPTION', `cannot resize the disk tier to ${sizeQuota} bytes: its files hold ${used}`);
    }
    let s = fs.statfsSync(this.dir);
    let room = s.bavail * s.bsize + this.reserveBytes(); // free space, the reserve counted as free
    if (room < sizeQuota - used) {
      const bytes = imageBytes(sizeQuota);
      fs.truncateSync(this.image, bytes);
      try {
        run('losetup', ['--set-capacity', this.device]);
        run('resize2fs', [this.device]);
      } catch (e) {
        throw new FusefsError('E_BAD_OPTION', `cannot grow the disk tier to ${sizeQuota} bytes past its image (online resize: ${stderrOf(e)}); remove and add the mount with the larger quota`);
      }
      s = fs.statfsSync(this.dir);
      room = s.bavail * s.bsize + this.reserveBytes();
    }
    const reserve = Math.max(0, Math.floor((room - (sizeQuota - used)) / s.bsize) * s.bsize);
    this.setReserve(reserve);
  }

  close(): void {
    SizedDiskTier.remove(path.dirname(this.dir));
  }

  private reserveBytes(): number {
    try {
      return fs.statSync(path.join(this.dir, RESERVE)).blocks * 512;
    } catch {
      return 0;
    }
  }

  private setReserve(bytes: number): void {
    const file = path.join(this.dir, RESERVE);
    if (bytes === 0) {
      fs.rmSync(file, { force: true });
      return;
    }
    if (bytes < this.reserveBytes()) {
      fs.truncateSync(file, bytes); // frees the blocks past the new end
      return;
    }
    try {
      run('fallocate', ['-l', String(bytes), file]);
    } catch (e) {
      throw new FusefsError('E_BAD_OPTION', `cannot lower the disk tier's room to the quota (files grew meanwhile?): ${stderrOf(e)}`);
    }
  }
}

function imageBytes(sizeQuota: number): number {
  const bytes = Math.ceil(sizeQuota * IMAGE_FACTOR) + IMAGE_SLACK_BYTES;
  return Math.ceil(bytes / 4096) * 4096;
}

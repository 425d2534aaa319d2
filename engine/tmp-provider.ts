import { chmod, mkdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import type { FunctionSpec } from './spec';
import { EngineError, errorMessage } from './errors';
import { runTool } from './images';

/**
 * A container label carrying the function's profiled largest file (bytes): a /tmp provider may read
 * it from the spec as the mount's placement hint (the Ephemera provider does).
 */
export const SIZE_HINT_LABEL = 'ephemera.size-hint';

export interface TmpCreateOptions {
  /** The profiling run: the provider puts every file on the disk tier so U and F are measured alone. */
  profiling: boolean;
}

/**
 * The hook through which a /tmp store (the Ephemera node daemon) plugs into the engine:
 * `create` before the container exists (its `hostPath` becomes the bind source, under a shared
 * parent), `attach` once the container's memory cgroup is known, `remove` after the container is gone.
 */
export interface TmpProvider {
  create(containerName: string, spec: FunctionSpec, options: TmpCreateOptions): Promise<{ hostPath: string }>;
  attach(containerName: string, cgroupPath: string): Promise<void>;
  remove(containerName: string): Promise<void>;
}

/** `true` when `dir` is itself a mount point in our mount namespace. */
export async function isMountPoint(dir: string): Promise<boolean> {
  const target = path.resolve(dir);
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  return text.split('\n').some((line) => line.split(' ')[4] === target);
}

/**
 * A plain host directory per container under a parent made a shared mount point: the same shape the
 * Ephemera provider has (there each directory is a FUSE mount), without a store behind it.
 */
export class PlainDirTmpProvider implements TmpProvider {
  readonly parentDir: string;
  /** cgroup paths handed to `attach`, by container name. */
  readonly attached = new Map<string, string>();
  private madeMount = false;

  private constructor(parentDir: string) {
    this.parentDir = path.resolve(parentDir);
  }

  static async open(parentDir: string): Promise<PlainDirTmpProvider> {
    const provider = new PlainDirTmpProvider(parentDir);
    await mkdir(provider.parentDir, { recursive: true });
    try {
      if (!(await isMountPoint(provider.parentDir))) {
        await runTool('mount', ['--bind', provider.parentDir, provider.parentDir]);
        provider.madeMount = true;
      }
      // rslave bind mounts require the source to sit on a shared (or slave) mount.
      await runTool('mount', ['--make-shared', provider.parentDir]);
    } catch (err) {
      await provider.close();
      throw new EngineError('E_TMP_PROVIDER', `making ${provider.parentDir} a shared mount: ${errorMessage(err)}`, undefined, err);
    }
    return provider;
  }

  hostPathOf(containerName: string): string {
    return path.join(this.parentDir, containerName);
  }

  async create(containerName: string): Promise<{ hostPath: string }> {
    const hostPath = this.hostPathOf(containerName);
    await mkdir(hostPath);
    // World-writable and sticky like any /tmp, so the function's non-root user can use it.
    await chmod(hostPath, 0o1777);
    return { hostPath };
  }

  async attach(containerName: string, cgroupPath: string): Promise<void> {
    this.attached.set(containerName, cgroupPath);
  }

  async remove(containerName: string): Promise<void> {
    this.attached.delete(containerName);
    await rm(this.hostPathOf(containerName), { recursive: true, force: true });
  }

  /** Unmounts the parent if we mounted it; the directory itself is left for its owner. */
  async close(): Promise<void> {
    if (!this.madeMount) return;
    this.madeMount = false;
    await runTool('umount', [this.parentDir]).catch(() => runTool('umount', ['-l', this.parentDir]));
  }
}

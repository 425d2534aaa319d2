// What a test needs from the machine, checked as such (not as uid 0): a root without
// CAP_SYS_ADMIN cannot mount, a user with a delegated cgroup can write one. Every check returns why
// it cannot run (undefined when it can) and says so on stderr, loudly, once per process.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MemoryCgroup } from '../../fusefs/memory/cgroup';

/** Bits of CapEff (include/uapi/linux/capability.h). */
const CAPABILITY = { CAP_SETGID: 6, CAP_SETUID: 7, CAP_NET_ADMIN: 12, CAP_SYS_ADMIN: 21 } as const;
export type Capability = keyof typeof CAPABILITY;

/** The capability is in this process's effective set. */
export function hasCapability(cap: Capability): boolean {
  const line = /^CapEff:\s*([0-9a-f]+)$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return line !== null && ((BigInt(`0x${line[1]}`) >> BigInt(CAPABILITY[cap])) & 1n) === 1n;
}

const said = new Set<string>();
/** Prints `*** SKIPPING what: why ***` once per process and returns `why`. */
export function skipping(what: string, why: string): string {
  const line = `*** SKIPPING ${what}: ${why} ***`;
  if (!said.has(line)) {
    said.add(line);
    process.stderr.write(`\n${line}\n\n`);
  }
  return why;
}

/** Why this process cannot serve a FUSE mount: it opens /dev/fuse and calls mount(2) itself. */
export function fuseMountUnavailable(): string | undefined {
  try {
    fs.closeSync(fs.openSync('/dev/fuse', 'r+'));
  } catch (err) {
    return `cannot open /dev/fuse (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`;
  }
  if (!hasCapability('CAP_SYS_ADMIN')) return 'no CAP_SYS_ADMIN: mount(2) of a FUSE file system is refused';
  return undefined;
}

/** Why real cgroup v1 memory cgroups cannot be made here: ours must be v1 and its cgroup.procs writable. */
export function cgroupV1WriteUnavailable(): string | undefined {
  try {
    const own = MemoryCgroup.fromPid('self');
    own.close();
    if (own.version !== 1) return `this process's memory cgroup is v${own.version}, these tests need v1`;
    fs.accessSync(path.join(own.dir, 'cgroup.procs'), fs.constants.W_OK);
    fs.accessSync(own.dir, fs.constants.W_OK); // a child cgroup is a mkdir here
  } catch (err) {
    return `no writable cgroup v1 memory controller: ${(err as Error).message}`;
  }
  return undefined;
}

/** Why a test cannot run a child as another uid (the permission and root-check tests do). */
export function switchUserUnavailable(): string | undefined {
  if (!hasCapability('CAP_SETUID') || !hasCapability('CAP_SETGID')) return 'no CAP_SETUID/CAP_SETGID: cannot run a child as another user';
  return undefined;
}

/** Why this process cannot start a dockerd of its own when none answers (it mounts and sets up networks). */
export function dockerdStartUnavailable(): string | undefined {
  if (!hasCapability('CAP_SYS_ADMIN') || !hasCapability('CAP_NET_ADMIN')) return 'dockerd is not running and starting it needs CAP_SYS_ADMIN and CAP_NET_ADMIN';
  return undefined;
}

/** Why a sized disk tier (ext4 on a loop device) cannot be made here: /dev/loop-control opened, and mount(2). */
export function loopDeviceUnavailable(): string | undefined {
  try {
    fs.closeSync(fs.openSync('/dev/loop-control', 'r+'));
  } catch (err) {
    return `cannot open /dev/loop-control (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): no sized disk tier`;
  }
  if (!hasCapability('CAP_SYS_ADMIN')) return 'no CAP_SYS_ADMIN: a loop device ext4 cannot be mounted';
  return undefined;
}

/** Why a fresh tmpfs (the reference file system) cannot be mounted here: mount(2) needs CAP_SYS_ADMIN. */
export function tmpfsMountUnavailable(): string | undefined {
  return hasCapability('CAP_SYS_ADMIN') ? undefined : 'no CAP_SYS_ADMIN: a tmpfs cannot be mounted';
}

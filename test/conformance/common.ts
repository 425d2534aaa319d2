// Shared plumbing of the conformance suite: per-test directories, errno capture, deterministic data.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { loadSyscalls, type Syscalls } from '../../fusefs/syscalls';

export interface SuiteDir {
  dir: string;
  teardown: () => Promise<void>;
}

export type SuiteSetup = () => Promise<SuiteDir>;

/** What each area's tests see: a fresh, empty, 0777 directory per test, and the native helpers. */
export interface SuiteContext {
  /** The current test's own directory (created in beforeEach, removed in afterEach). */
  dir(): string;
  /** Path of `name` inside the current test's directory. */
  p(...names: string[]): string;
  sys: Syscalls;
  label: string;
}

export function loadSys(): Syscalls {
  return loadSyscalls();
}

/** 'OK' when `fn` returns, else the errno name of what it threw (EEXIST, ENOTDIR…). */
export function errnoOf(fn: () => unknown): string {
  try {
    fn();
    return 'OK';
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (typeof code !== 'string') throw error;
    return code;
  }
}

/** Deterministic pseudo-random bytes (xorshift32), so a failing comparison is reproducible. */
export function patternBytes(length: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  let state = (seed | 0) || 0x9e3779b9;
  let i = 0;
  for (; i + 4 <= length; i += 4) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    out.writeInt32LE(state | 0, i);
  }
  for (; i < length; i++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    out[i] = state & 0xff;
  }
  return out;
}

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

export function readAll(file: string): Buffer {
  return fs.readFileSync(file);
}

/** pread exactly `length` bytes or fewer at EOF; returns what was read. */
export function preadExact(fd: number, offset: number, length: number): Buffer {
  const buffer = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const got = fs.readSync(fd, buffer, done, length - done, offset + done);
    if (got === 0) break;
    done += got;
  }
  return buffer.subarray(0, done);
}

export function pwriteAll(fd: number, offset: number, data: Uint8Array): void {
  let done = 0;
  while (done < data.length) {
    done += fs.writeSync(fd, data, done, data.length - done, offset + done);
  }
}

export function withFd<T>(file: string, flags: string | number, fn: (fd: number) => T, mode?: number): T {
  const fd = fs.openSync(file, flags, mode);
  try {
    return fn(fd);
  } finally {
    fs.closeSync(fd);
  }
}

export function names(dir: string): string[] {
  return fs.readdirSync(dir).sort();
}

export function slug(text: string): string {
  return text.replace(/[^a-zA-Z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 60) || 'test';
}

export function join(...parts: string[]): string {
  return path.join(...parts);
}

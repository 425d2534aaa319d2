import { createContainerSuite, type ContainerCase } from '../container-suite';
import { SINGLE_CONTAINER_TARGETS } from '../container-targets';
import { EPH_WORK } from '../payload';

/**
 * The FunctionBench-derived functions of the thesis (notes §3, §8.2–4): sequential and random 8 KiB
 * I/O on one 32 MiB file (500k ops, 150 MiB limit), the original's byte-at-a-time Huffman coder
 * (1-byte read()/write() calls: per-syscall cost is its point) at 64 MiB, and real gzip on the same
 * random data. Random bytes do not compress; that is the original's input too.
 */
const GZIP_TIMED = [
  '/bin/sh',
  '-c',
  // date +%s%N inside the container: the invocation's own time, without docker exec's overhead.
  's=$(date +%s%N); gzip -c /tmp/input.dat > /tmp/input.dat.gz || exit 1; e=$(date +%s%N); echo "{\\"seconds\\": $((e - s))e-9, \\"out_bytes\\": $(stat -c %s /tmp/input.dat.gz)}"',
];

export function functionbenchCases(quick: boolean): ContainerCase[] {
  const ops = quick ? 50_000 : 500_000;
  // 1-byte syscalls: ~10-25 s per MiB per invocation on a loaded 2-core VM, so --quick keeps 1 MiB.
  const sizes = quick ? [1] : [1, 2, 4, 8, 16];
  const io = (workload: string, mode: string): ContainerCase => ({
    workload,
    parameters: { primary: 'seconds', file_mib: 32, ops, block: 8192 },
    image: 'function',
    memoryMiB: 150,
    argv: [EPH_WORK, mode, '/tmp', '32', String(ops)],
    largestFileMiB: 32,
    phases: ['cold', 'warm'],
    timeoutMs: quick ? 120_000 : 600_000,
  });
  return [
    io('sequential-io', 'seqio'),
    io('random-io', 'randio'),
    ...sizes.map((mib) => ({
      workload: 'huffman',
      parameters: { primary: 'seconds', sweep: 'input_mib', input_mib: mib },
      image: 'function',
      memoryMiB: 64,
      argv: [EPH_WORK, 'huffman', '/tmp', String(mib)],
      largestFileMiB: mib, // the input; the coded output is about as large
      phases: ['cold', 'warm'] as const,
      // ~3 syscalls per input byte: about 5 s per MiB on a loaded 2-core VM.
      timeoutMs: 60_000 + mib * 30_000,
    })),
    ...sizes.map((mib) => ({
      workload: 'gzip',
      parameters: { primary: 'seconds', sweep: 'input_mib', input_mib: mib, level: 6 },
      image: 'function',
      memoryMiB: 64,
      prepare: [EPH_WORK, 'gen', '/tmp/input.dat', String(mib)],
      argv: GZIP_TIMED,
      largestFileMiB: mib,
      phases: ['cold', 'warm'] as const,
      timeoutMs: 120_000,
    })),
  ];
}

export const functionbenchSuite = createContainerSuite({
  name: 'functionbench',
  description: 'FunctionBench-derived functions in containers: sequential/random 8 KiB I/O, byte-at-a-time Huffman coder, gzip',
  defaultTimeCapS: { quick: 600, full: 3600 },
  // One pass by default: the byte-at-a-time Huffman coder alone takes ~20 min per pass (16 MiB:
  // ~75 s per invocation), and the whole set must stay under 2 hours.
  defaultPasses: { quick: 1, full: 1 },
  defaultTargets: SINGLE_CONTAINER_TARGETS,
  images: ['function'],
  cases: functionbenchCases,
});

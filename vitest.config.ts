import { defineConfig } from 'vitest/config';

// Tests that mount FUSE, touch cgroups or drive dockerd run in forked processes (a native
// addon with its own threads does not belong in a worker_thread), two at a time on a 2-core box.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default'],
  },
});

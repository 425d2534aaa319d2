import { configDefaults, defineConfig } from 'vitest/config';

// Two projects. `unit` needs no root, no Docker and no FUSE mount: it runs anywhere Node runs, as
// any user (`npx vitest run --project unit`). `system` is everything else: mounts, real cgroups,
// dockerd, external programs. `vitest run` (npm test, scripts/test.sh) runs both.
const UNIT = [
  'test/errors/**/*.test.ts',
  'test/policy/**/*.test.ts',
  'test/link/**/*.test.ts',
  'test/manager/unit/**/*.test.ts',
  // The dispatcher fed request bytes, and options/errors crossing into the native core: no mount.
  'test/fusefs/dispatch.test.ts',
  'test/fusefs/boundary.test.ts',
  'test/controller/api.test.ts',
  'test/controller/auth.test.ts',
  'test/controller/extender.test.ts',
  'test/controller/state.test.ts',
  'test/csi/config.test.ts',
  'test/csi/deploy.test.ts',
  'test/memory/cgroup-v2.test.ts',
  'test/memory/headroom.test.ts',
  'test/engine/units.test.ts',
  'test/bench/commands.test.ts',
  'test/bench/container-suites.test.ts',
  'test/bench/fio-parse.test.ts',
  'test/bench/headline.test.ts',
  'test/bench/report.test.ts',
  'test/bench/summary.test.ts',
];

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default'],
    // Tests that mount FUSE, touch cgroups or drive dockerd run in forked processes (a native
    // addon with its own threads does not belong in a worker_thread), two at a time on a 2-core box.
    // Vitest 3.2 sizes the pool for all projects together (a project may not set maxForks).
    pool: 'forks',
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    // `--coverage` measures the tenant manager, the state machine the unit project drives in memory.
    coverage: { provider: 'v8', include: ['manager/**/*.ts'], reporter: ['text', 'json-summary'] },
    projects: [
      {
        extends: true,
        test: { name: 'unit', include: UNIT },
      },
      {
        extends: true,
        test: {
          name: 'system',
          include: ['test/**/*.test.ts'],
          exclude: [...configDefaults.exclude, ...UNIT],
        },
      },
    ],
  },
});

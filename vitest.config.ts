import { configDefaults, defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Tests use loop devices, mounts and child processes; keep files from
    // fighting over the 2 cores and the loop-device table.
    fileParallelism: false,
    // The JSON report lets .ci/run print a plain 'N passed, N failed' line.
    reporters: ['default', 'json'],
    outputFile: { json: 'test-results/vitest.json' },
    projects: [
      {
        extends: true,
        test: { name: 'main', include: ['test/**/*.test.ts'], exclude: [...configDefaults.exclude, 'test/s3/**'] },
      },
      {
        // Against a real Ceph RADOS Gateway, started once for the project's
        // files (only when some of them run) and stopped at the end.
        extends: true,
        test: {
          name: 's3',
          include: ['test/s3/**/*.test.ts'],
          globalSetup: ['test/services/ceph-rgw/global-setup.ts'],
        },
      },
    ],
  },
});

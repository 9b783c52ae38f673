import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    globalSetup: ['test/helpers/global-setup.ts'],
    // KDI_PROBE: .ci/run's proof that failures fail the command (test/ci/must-fail.probe.ts)
    include: process.env.KDI_PROBE ? ['test/ci/must-fail.probe.ts'] : ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // process-heavy suites (16-32 concurrent Node processes) must not run side by side on 2 cores
    fileParallelism: false,
  },
});

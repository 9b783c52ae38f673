import { defineConfig } from 'vitest/config';

// The end-to-end suite on a real single-node Kubernetes (.ci/k8s.sh up): `npm run e2e`.
// Kept out of `npm test` (its files are *.e2e.ts): it needs root, a cluster and the images.
export default defineConfig({
  test: {
    include: ['test/e2e/**/*.e2e.ts'],
    globalSetup: ['test/e2e/setup.ts'],
    testTimeout: 900_000,
    hookTimeout: 600_000,
    pool: 'forks',
    fileParallelism: false,
  },
});

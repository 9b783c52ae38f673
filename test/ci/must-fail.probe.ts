/**
 * CI probe, never part of the normal run: .ci/run runs this file through the project's own vitest
 * configuration (global setup included) and fails itself unless the run exits non-zero. It proves
 * that a failing test, a failing suite and a failing global setup/teardown fail the test command.
 *   KDI_PROBE=test      one failing assertion
 *   KDI_PROBE=suite     the file itself throws while loading
 *   KDI_PROBE=setup     global setup throws (see test/helpers/global-setup.ts)
 *   KDI_PROBE=teardown  global teardown throws
 */
import { expect, test } from 'vitest';

if (process.env.KDI_PROBE === 'suite') throw new Error('probe: this suite fails to load on purpose');

test(`probe (${process.env.KDI_PROBE}): ${process.env.KDI_PROBE === 'test' ? 'must fail' : 'passes; the failure is elsewhere'}`, () => {
  expect(process.env.KDI_PROBE === 'test' ? 1 : 2).toBe(2);
});

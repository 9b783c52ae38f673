/** process-group.ts against real processes: a group whose leader exits leaves orphans; stopGroup ends them all. */
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { groupAlive, stopGroup, waitGroupGone } from '../../src/kong/process-group.js';

describe('process groups', () => {
  it('sees the orphans of a leader that exited, and stopGroup leaves none (also one that ignores SIGTERM)', async () => {
    // the leader starts a grandchild that ignores TERM, then exits
    const leader = spawn('sh', ['-c', 'sh -c \'trap "" TERM; while :; do sleep 0.05; done\' & sleep 0.2; exit 0'], { detached: true, stdio: 'ignore' });
    const pgid = leader.pid!;
    await new Promise((r) => leader.once('exit', r));
    expect(groupAlive(pgid)).toBe(true);
    expect(await waitGroupGone(pgid, 200)).toBe(false);
    expect(await stopGroup(pgid, 300)).toBe(true);
    expect(groupAlive(pgid)).toBe(false);
  });
});

/**
 * Kong's CLI is a chain of five processes (resty → nginx → sh → resty → nginx; the last one
 * migrates): signalling the spawned process neither stops nor shortens a migration, and SIGKILL to
 * it orphans the rest. So Kong runs in its own process group and we signal and watch the group.
 */
import fs from 'node:fs';

/** Send a signal to every process of a group; false when the group is gone. */
export function signalGroup(pgid: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(-pgid, sig);
    return true;
  } catch {
    return false;
  }
}

/**
 * Whether a process of the group still runs. Reads /proc so that zombies (exited, not yet reaped by
 * whoever adopted them) do not count; falls back to kill(-pgid, 0) where /proc is not there.
 */
export function groupAlive(pgid: number): boolean {
  let entries: string[];
  try {
    entries = fs.readdirSync('/proc');
  } catch {
    return signalGroup(pgid, 0 as unknown as NodeJS.Signals);
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${e}/stat`, 'utf8');
    } catch {
      continue;
    }
    // pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(f[2]) === pgid && f[0] !== 'Z' && f[0] !== 'X') return true;
  }
  return false;
}

/** Poll until the group is empty or `ms` passed; true when it is empty. */
export async function waitGroupGone(pgid: number, ms: number, signal?: AbortSignal): Promise<boolean> {
  const end = Date.now() + ms;
  while (groupAlive(pgid)) {
    if (Date.now() >= end || signal?.aborted) return !groupAlive(pgid);
    await new Promise((r) => setTimeout(r, 25));
  }
  return true;
}

/**
 * Stop a group for good: SIGTERM, then SIGKILL after `termMs`, and wait until no process of it is
 * left (bounded: a process in uninterruptible sleep is reported, not waited for forever).
 */
export async function stopGroup(pgid: number, termMs: number): Promise<boolean> {
  if (!groupAlive(pgid)) return true;
  signalGroup(pgid, 'SIGTERM');
  if (await waitGroupGone(pgid, termMs)) return true;
  signalGroup(pgid, 'SIGKILL');
  return waitGroupGone(pgid, 10_000);
}

/** The Kong process groups this process started and that may still run (for a second signal). */
const tracked = new Set<number>();
export const trackGroup = (pgid: number): void => void tracked.add(pgid);
export const untrackGroup = (pgid: number): void => void tracked.delete(pgid);

/**
 * A second SIGTERM/SIGINT: the operator wants out now. SIGKILL every tracked group and wait
 * (bounded) until none of their processes is left, so that we never exit with Kong running on.
 * Returns how many groups were killed.
 */
export async function killTrackedGroups(): Promise<number> {
  const groups = [...tracked].filter(groupAlive);
  for (const g of groups) signalGroup(g, 'SIGKILL');
  await Promise.all(groups.map((g) => waitGroupGone(g, 10_000)));
  return groups.length;
}

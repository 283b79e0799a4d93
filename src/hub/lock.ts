/**
 * One writer per cached file. Two pulls of the same repo (two processes, or two calls in one
 * process) would otherwise append to the same `.incomplete` file; the second waits instead.
 *
 * The lock is `<file>.lock` created exclusively and holding the owner's pid. A lock whose
 * process is gone (killed mid-download) is stale and taken over.
 */
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { throwIfAborted, type HubClient } from './http.js';
import { LOCK_SUFFIX } from './paths.js';

const POLL_MS = 250;
const EMPTY_LOCK_GRACE_MS = 10_000;
const heldHere = new Map<string, Promise<void>>();

/** Runs `body` holding the lock for `file`; waits (abortably) while someone else holds it. */
export async function withFileLock<T>(client: HubClient, file: string, body: () => Promise<T>): Promise<T> {
  const lockPath = file + LOCK_SUFFIX;
  // Calls in this process queue on a promise; only one of them touches the lock file.
  while (heldHere.has(lockPath)) {
    await heldHere.get(lockPath);
    throwIfAborted(client);
  }
  let release!: () => void;
  heldHere.set(lockPath, new Promise<void>((resolve) => (release = resolve)));
  try {
    await acquire(client, lockPath);
    try {
      return await body();
    } finally {
      await fs.promises.rm(lockPath, { force: true });
    }
  } finally {
    heldHere.delete(lockPath);
    release();
  }
}

async function acquire(client: HubClient, lockPath: string): Promise<void> {
  for (;;) {
    throwIfAborted(client);
    try {
      await fs.promises.writeFile(lockPath, String(process.pid), { flag: 'wx' });
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    if (await isStale(lockPath)) {
      // Stale: its writer died. Removing it races only with another taker, and 'wx' settles that.
      await fs.promises.rm(lockPath, { force: true });
      continue;
    }
    try {
      await sleep(POLL_MS, undefined, { signal: client.signal });
    } catch (err) {
      throwIfAborted(client, err);
      throw err;
    }
  }
}

async function isStale(lockPath: string): Promise<boolean> {
  const [text, stat] = await Promise.all([
    fs.promises.readFile(lockPath, 'utf8').catch(() => undefined),
    fs.promises.stat(lockPath).catch(() => undefined),
  ]);
  if (text === undefined || !stat) return false; // gone already: the next 'wx' will tell
  // Empty: its owner created it and has not written its pid yet, unless that was long ago.
  if (text.trim() === '') return Date.now() - stat.mtimeMs > EMPTY_LOCK_GRACE_MS;
  return !isAlive(Number(text.trim()));
}

function isAlive(pid: number): boolean {
  // Our own pid in a lock file we do not hold here is left over from a crash before a pid reuse.
  if (!Number.isSafeInteger(pid) || pid <= 0 || pid === process.pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

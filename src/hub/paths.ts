/**
 * Where pulled checkpoints live, and the names we accept before they touch the disk.
 *
 * Layout under the cache root (default `$XDG_CACHE_HOME/xglm-node`, else `~/.cache/xglm-node`;
 * on Windows `%LOCALAPPDATA%\xglm-node\Cache`, the per-user, non-roaming place for caches):
 *
 * ```
 * hub/<owner>/<name>/<commit>/config.json, model.safetensors, …   one folder per commit
 * hub/<owner>/<name>/<commit>/model.safetensors.incomplete        a download in progress
 * hub/<owner>/<name>/<commit>/model.safetensors.lock              held (with its pid) by the process writing it
 * hub/<owner>/<name>/<commit>/.xglm-pull.json                     written once every file is verified
 * hub/<owner>/<name>/refs/<revision>                              the commit a branch or tag pointed at
 * ```
 */
import os from 'node:os';
import path from 'node:path';
import { XglmError } from '../errors.js';

/** Name of the manifest written into a snapshot folder once all its files are verified. */
export const MANIFEST_NAME = '.xglm-pull.json';
/** Suffix of a partial download; it is resumed with an HTTP Range request. */
export const INCOMPLETE_SUFFIX = '.incomplete';
/** Suffix of the lock that keeps two pulls from writing the same file. */
export const LOCK_SUFFIX = '.lock';

const MAX_REPO_ID_LENGTH = 96;
// The hub's own rule: letters, digits, '-', '_', '.'; no leading or trailing '-' or '.'; no '--' or '..'.
const REPO_PART = /^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$/;
const COMMIT_SHA = /^[0-9a-f]{40}$/;

/**
 * The cache root: the `cacheDir` option, else `XGLM_CACHE_DIR`, else the XDG cache folder +
 * `/xglm-node` (an absolute `XDG_CACHE_HOME` counts on Windows too); else, on Windows,
 * `%LOCALAPPDATA%\xglm-node\Cache` (a roaming profile must not carry gigabytes of weights).
 * HuggingFace's `HF_HOME` is not used: the layout is xglm-node's own.
 */
export function resolveCacheRoot(cacheDir?: string, env: NodeJS.ProcessEnv = process.env, platform: NodeJS.Platform = process.platform): string {
  const p = platform === 'win32' ? path.win32 : path.posix;
  if (cacheDir) return p.resolve(cacheDir);
  if (env.XGLM_CACHE_DIR) return p.resolve(env.XGLM_CACHE_DIR);
  // The XDG spec says a relative XDG_CACHE_HOME is invalid and must be ignored.
  if (env.XDG_CACHE_HOME && p.isAbsolute(env.XDG_CACHE_HOME)) return p.join(env.XDG_CACHE_HOME, 'xglm-node');
  if (platform === 'win32') {
    const local = env.LOCALAPPDATA && p.isAbsolute(env.LOCALAPPDATA) ? env.LOCALAPPDATA : p.join(os.homedir(), 'AppData', 'Local');
    return p.join(local, 'xglm-node', 'Cache');
  }
  return p.join(os.homedir(), '.cache', 'xglm-node');
}

export function isCommitSha(revision: string): boolean {
  return COMMIT_SHA.test(revision);
}

/** Throws unless `repo` is `owner/name` (or a bare `name`) as the hub spells repo ids. */
export function assertRepoId(repo: string): void {
  const parts = typeof repo === 'string' ? repo.split('/') : [];
  const ok =
    parts.length >= 1 &&
    parts.length <= 2 &&
    repo.length <= MAX_REPO_ID_LENGTH &&
    parts.every((part) => REPO_PART.test(part) && !part.includes('--') && !part.includes('..') && isWindowsSafeName(part));
  if (!ok) {
    throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `invalid HuggingFace repo id ${JSON.stringify(repo)}`, {
      hint: 'use the form owner/name, e.g. facebook/xglm-564M',
    });
  }
}

/** Throws unless `revision` is a branch, tag or commit name that cannot escape the refs folder. */
export function assertRevision(revision: string): void {
  const ok =
    typeof revision === 'string' &&
    revision.length > 0 &&
    revision.length <= 256 &&
    !revision.split('/').some((part) => part === '' || part === '.' || part === '..') &&
    !/[\0\\]/.test(revision);
  if (!ok) {
    throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `invalid revision ${JSON.stringify(revision)}`, {
      hint: 'give a branch, a tag or a 40-character commit sha (default: main)',
    });
  }
}

/**
 * Throws unless a file name listed by the hub is a plain relative POSIX path: it becomes a path
 * on disk, so `..`, absolute paths, backslashes and our own side-file names are refused.
 */
export function assertSafeRepoFile(name: string): void {
  if (!isSafeRepoFile(name)) throw new XglmError('ERR_XGLM_HUB', `the hub listed an unsafe file name ${JSON.stringify(name)}`);
}

// Names Windows cannot create in any folder: its device names (with any extension), the
// characters it reserves, and a trailing dot or space (which it drops silently). Refused on
// every platform, so a cache folder copied between machines means the same everywhere.
const WINDOWS_DEVICE = /^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])(\..*)?$/i;
const WINDOWS_RESERVED = /[<>:"|?*\x00-\x1f]/;

/** Whether one path component can be a file or folder name on Windows. */
export function isWindowsSafeName(part: string): boolean {
  return !WINDOWS_DEVICE.test(part) && !WINDOWS_RESERVED.test(part) && !/[. ]$/.test(part);
}

export function isSafeRepoFile(name: string): boolean {
  return (
    typeof name === 'string' &&
    name.length > 0 &&
    name.length <= 1024 &&
    !name.startsWith('/') &&
    !/[\0\\]/.test(name) &&
    !name.split('/').some((part) => part === '' || part === '.' || part === '..' || !isWindowsSafeName(part)) &&
    !name.endsWith(INCOMPLETE_SUFFIX) &&
    !name.endsWith(LOCK_SUFFIX) &&
    name !== MANIFEST_NAME
  );
}

export function repoCacheDir(cacheRoot: string, repo: string): string {
  return path.join(cacheRoot, 'hub', ...repo.split('/'));
}

export function snapshotDir(cacheRoot: string, repo: string, commit: string): string {
  return path.join(repoCacheDir(cacheRoot, repo), commit);
}

/** One file per revision; `refs/pr/1` is stored flat as `refs%2Fpr%2F1`. */
export function refFile(cacheRoot: string, repo: string, revision: string): string {
  return path.join(repoCacheDir(cacheRoot, repo), 'refs', encodeURIComponent(revision));
}

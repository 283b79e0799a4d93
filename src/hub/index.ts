/**
 * `pull`: a transformers XGLM checkpoint from the HuggingFace hub into the local cache, then
 * (with a `type`) through the converter into a GGUF file.
 *
 * ```ts
 * const { dir, files } = await pullFiles('facebook/xglm-564M');           // download only
 * const { gguf } = await pull('facebook/xglm-564M', { type: 'q4_k_m' });  // download + convert
 * ```
 *
 * Environment: `HF_ENDPOINT` (default https://huggingface.co), `HF_TOKEN` (sent as a Bearer
 * token to the endpoint only), `XGLM_CACHE_DIR`, `HF_HUB_OFFLINE=1` (use the cache, no network).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { ProgressEvent as ConvertProgressEvent } from '../convert/index.js';
import { parseOutputType } from '../convert/output-types.js';
import { XglmError } from '../errors.js';
import { fetchRepoListing, basePath, type RemoteFile, type RepoListing } from './api.js';
import { downloadFile, type FilePhase, type FileProgress } from './download.js';
import { HubError, throwIfAborted, type HubClient } from './http.js';
import {
  MANIFEST_NAME,
  assertRepoId,
  assertRevision,
  isCommitSha,
  refFile,
  resolveCacheRoot,
  snapshotDir,
} from './paths.js';
import { CONFIG_FILE, assertXglmConfig, planDownloads, shardsFromIndex } from './select.js';
import { renameIntoPlace } from '../files.js';

export { HubError } from './http.js';
export { resolveCacheRoot } from './paths.js';

export const DEFAULT_ENDPOINT = 'https://huggingface.co';

/** One progress report; enough for a byte progress bar over the whole pull. */
export interface PullProgress extends Omit<FileProgress, 'phase'> {
  /** `cached`: the file was already in the cache; nothing was requested for it. */
  phase: FilePhase | 'cached';
  /** Path of the file inside the repo. */
  file: string;
  /** 0-based position of `file` among `fileCount` files (shards extend the count once the index is read). */
  fileIndex: number;
  fileCount: number;
  totalBytesDone: number;
  /** Sum of all planned files' sizes, when the hub gave every size. */
  totalBytes: number | undefined;
}

export interface PullFilesOptions {
  /** Branch, tag or commit sha. @default 'main' */
  revision?: string;
  /** Cache root; files go to `<cacheDir>/hub/<repo>/<commit>/`. @default XGLM_CACHE_DIR, else $XDG_CACHE_HOME/xglm-node, else ~/.cache/xglm-node */
  cacheDir?: string;
  /** Hub (or mirror) base URL. @default HF_ENDPOINT, else https://huggingface.co */
  endpoint?: string;
  /** Access token for private or gated repos. @default HF_TOKEN */
  token?: string;
  /** Use only the cache; fail if the revision was never pulled. @default HF_HUB_OFFLINE=1 */
  offline?: boolean;
  onProgress?: (progress: PullProgress) => void;
  signal?: AbortSignal;
  /** Further attempts after a dropped connection, 5xx or 429 (reset whenever bytes arrive). @default 5 */
  retries?: number;
  /** First backoff delay; doubled per failure, capped at 30 s. @default 1000 */
  retryDelayMs?: number;
  /** A connection silent this long is dropped and retried. @default 60000 */
  timeoutMs?: number;
}

export interface PulledFile {
  /** Path inside the repo. */
  name: string;
  /** Absolute path on disk. */
  path: string;
  size: number;
  /** sha256 the file was verified against, when the hub published one (LFS files). */
  sha256: string | undefined;
  cached: boolean;
}

export interface PullFilesResult {
  repo: string;
  revision: string;
  commit: string;
  /** The snapshot folder: an HF model folder the converter reads. */
  dir: string;
  files: PulledFile[];
  /** True when the hub was not asked at all (offline, or a pinned commit already complete). */
  fromCache: boolean;
}

/** Downloads what conversion needs (config, tokenizer, weights) into the cache; returns the folder. */
export async function pullFiles(repo: string, options: PullFilesOptions = {}): Promise<PullFilesResult> {
  const revision = options.revision ?? 'main';
  assertRepoId(repo);
  assertRevision(revision);
  const client = makeClient(options);
  const cacheRoot = resolveCacheRoot(options.cacheDir);
  const offline = options.offline ?? isTruthy(process.env.HF_HUB_OFFLINE);

  // A pinned, complete commit needs no network at all.
  if (offline || isCommitSha(revision)) {
    const cached = await readCachedSnapshot(cacheRoot, repo, revision);
    if (cached) return cached;
    if (offline) {
      throw new HubError(`${repo}@${revision} is not in the cache (${cacheRoot}) and offline mode is on`, {
        hint: 'unset HF_HUB_OFFLINE and run the command once with network access',
      });
    }
  }
  throwIfAborted(client);
  let listing: RepoListing;
  try {
    listing = await fetchRepoListing(client, repo, revision);
  } catch (err) {
    // Unreachable hub (no HTTP status): fall back to what an earlier pull of this revision left.
    if (err instanceof HubError && err.status === undefined && !client.signal?.aborted) {
      const cached = await readCachedSnapshot(cacheRoot, repo, revision);
      if (cached) return cached;
    }
    throw err;
  }
  return downloadListing(client, cacheRoot, listing, options.onProgress);
}

async function downloadListing(
  client: HubClient,
  cacheRoot: string,
  listing: RepoListing,
  onProgress: ((progress: PullProgress) => void) | undefined,
): Promise<PullFilesResult> {
  const { repo, revision, commit } = listing;
  const dir = snapshotDir(cacheRoot, repo, commit);
  const plan = planDownloads(listing);
  const queue = plan.weights.sharded ? [...plan.small] : [...plan.small, plan.weights.file];
  const pulled: PulledFile[] = [];
  let doneBytes = 0;

  for (let index = 0; index < queue.length; index++) {
    const remote = listing.files.get(queue[index]!)!;
    const totalBytes = sumSizes(queue.map((name) => listing.files.get(name)!));
    const report = (progress: FileProgress | (Omit<FileProgress, 'phase'> & { phase: 'cached' })) =>
      onProgress?.({
        ...progress,
        file: remote.name,
        fileIndex: index,
        fileCount: queue.length,
        totalBytesDone: doneBytes + progress.bytesDone,
        totalBytes,
      });
    const url = new URL(
      `${basePath(client)}/${repo}/resolve/${encodeURIComponent(commit)}/${remote.name.split('/').map(encodeURIComponent).join('/')}`,
      client.endpoint,
    );
    const dest = path.join(dir, remote.name);
    const subject = { repo, revision, file: remote.name };
    const file = await downloadFile(client, { url, file: remote, dest, commit, subject }, report);
    if (file.cached) report({ phase: 'cached', bytesDone: file.size, bytesTotal: file.size });
    doneBytes += file.size;
    pulled.push({ name: remote.name, ...file });

    // Fail on a wrong repo before the weights move; learn the shards once their index is here.
    if (remote.name === CONFIG_FILE) assertXglmConfig(await fs.promises.readFile(file.path, 'utf8'), `${repo}@${revision}`);
    if (plan.weights.sharded && remote.name === plan.weights.file) {
      queue.push(...shardsFromIndex(await fs.promises.readFile(file.path, 'utf8'), listing, remote.name));
    }
  }

  await writeManifest(dir, listing, pulled);
  if (revision !== commit) await writeAtomic(refFile(cacheRoot, repo, revision), commit);
  return { repo, revision, commit, dir, files: pulled, fromCache: false };
}

interface Manifest {
  format: 'xglm-pull-v1';
  repo: string;
  commit: string;
  files: { name: string; size: number; sha256: string | undefined }[];
}

async function writeManifest(dir: string, listing: RepoListing, files: PulledFile[]): Promise<void> {
  const manifest: Manifest = {
    format: 'xglm-pull-v1',
    repo: listing.repo,
    commit: listing.commit,
    files: files.map(({ name, size, sha256 }) => ({ name, size, sha256 })),
  };
  await writeAtomic(path.join(dir, MANIFEST_NAME), `${JSON.stringify(manifest, null, 2)}\n`);
}

/** A snapshot an earlier pull completed (manifest present, every file at its size), else undefined. */
async function readCachedSnapshot(cacheRoot: string, repo: string, revision: string): Promise<PullFilesResult | undefined> {
  const commit = isCommitSha(revision) ? revision : (await readText(refFile(cacheRoot, repo, revision)))?.trim();
  if (!commit || !isCommitSha(commit)) return undefined;
  const dir = snapshotDir(cacheRoot, repo, commit);
  const text = await readText(path.join(dir, MANIFEST_NAME));
  if (!text) return undefined;
  let manifest: Manifest;
  try {
    manifest = JSON.parse(text) as Manifest;
  } catch {
    return undefined;
  }
  if (manifest.format !== 'xglm-pull-v1' || manifest.commit !== commit || !Array.isArray(manifest.files)) return undefined;
  const files: PulledFile[] = [];
  for (const entry of manifest.files) {
    const filePath = path.join(dir, entry.name);
    const stat = await fs.promises.stat(filePath).catch(() => undefined);
    if (!stat?.isFile() || stat.size !== entry.size) return undefined;
    files.push({ name: entry.name, path: filePath, size: entry.size, sha256: entry.sha256, cached: true });
  }
  return { repo, revision, commit, dir, files, fromCache: true };
}

/** Converter contract (src/convert): HF model folder → GGUF file of the given type. */
export type ConvertFn = (
  hfDir: string,
  outFile: string,
  options: { type: string; name?: string; onProgress?: (event: ConvertProgressEvent) => void },
) => Promise<unknown>;

export interface PullOptions extends PullFilesOptions {
  /** GGUF type to convert to (f32, f16, bf16, q8_0, q6_k, q5_k_m, q5_0, q4_k_m, q4_0); without it, only download. */
  type?: string;
  /** Where the GGUF goes (replaced if it exists). @default <cacheDir>/gguf/<repo>/<commit>/<name>-<type>.gguf, reused when present */
  outFile?: string;
  /** Convert again even when the default GGUF is already in the cache. @default false */
  force?: boolean;
  /** The converter's own progress reports, forwarded. */
  onConvertProgress?: (event: ConvertProgressEvent) => void;
  /** The converter to run. @default the package's own (src/convert) */
  convert?: ConvertFn;
}

export interface PullResult extends PullFilesResult {
  /** The GGUF file, when a `type` was given. */
  gguf: string | undefined;
  /** False when `gguf` already existed and was reused. */
  converted: boolean;
}

/** Downloads a checkpoint and, with `type`, converts it to GGUF. */
export async function pull(repo: string, options: PullOptions = {}): Promise<PullResult> {
  // A typo in the type must fail before gigabytes move, not after.
  const type = options.type === undefined ? undefined : parseOutputType(options.type);
  const files = await pullFiles(repo, options);
  if (type === undefined) return { ...files, gguf: undefined, converted: false };
  const outFile = path.resolve(
    options.outFile ?? path.join(resolveCacheRoot(options.cacheDir), 'gguf', repo, files.commit, `${path.basename(repo)}-${type}.gguf`),
  );
  // Only the default path names repo, commit and type, so only there is an existing file this very GGUF.
  const reusable = options.outFile === undefined && !options.force;
  if (reusable && (await fs.promises.stat(outFile).catch(() => undefined))?.isFile()) {
    return { ...files, gguf: outFile, converted: false };
  }
  // Loaded on demand: pulling files alone never loads the converter (or, through it, the addon).
  const convert: ConvertFn = options.convert ?? (await import('../convert/index.js')).convert;
  await fs.promises.mkdir(path.dirname(outFile), { recursive: true });
  // Converted into a side file and renamed, so an existing outFile is always a whole one.
  const partial = `${outFile}.incomplete`;
  try {
    // general.name: the repo's name, not the snapshot folder's (a commit sha).
    await convert(files.dir, partial, { type, name: path.basename(repo), onProgress: options.onConvertProgress });
    await renameIntoPlace(partial, outFile);
  } catch (err) {
    await fs.promises.rm(partial, { force: true });
    throw err;
  }
  return { ...files, gguf: outFile, converted: true };
}

function makeClient(options: PullFilesOptions): HubClient {
  const endpointText = options.endpoint ?? (process.env.HF_ENDPOINT || DEFAULT_ENDPOINT);
  let endpoint: URL;
  try {
    endpoint = new URL(endpointText);
  } catch {
    endpoint = new URL('invalid:');
  }
  if (endpoint.protocol !== 'https:' && endpoint.protocol !== 'http:') {
    throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `invalid hub endpoint ${JSON.stringify(endpointText)}`, {
      hint: 'HF_ENDPOINT must be an http(s) URL such as https://huggingface.co',
    });
  }
  const token = options.token ?? (process.env.HF_TOKEN || undefined);
  return {
    endpoint,
    token: token?.trim() || undefined,
    signal: options.signal,
    timeoutMs: positiveInteger(options.timeoutMs, 60_000, 'timeoutMs'),
    retries: nonNegativeInteger(options.retries, 5, 'retries'),
    retryDelayMs: nonNegativeInteger(options.retryDelayMs, 1000, 'retryDelayMs'),
  };
}

function positiveInteger(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value <= 0) throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `${name} must be a positive integer, got ${value}`);
  return value;
}

function nonNegativeInteger(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < 0) throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `${name} must be a non-negative integer, got ${value}`);
  return value;
}

function sumSizes(files: RemoteFile[]): number | undefined {
  let total = 0;
  for (const file of files) {
    if (file.size === undefined) return undefined;
    total += file.size;
  }
  return total;
}

function isTruthy(value: string | undefined): boolean {
  return value !== undefined && ['1', 'true', 'yes', 'on'].includes(value.toLowerCase());
}

async function readText(file: string): Promise<string | undefined> {
  return fs.promises.readFile(file, 'utf8').catch(() => undefined);
}

async function writeAtomic(file: string, text: string): Promise<void> {
  await fs.promises.mkdir(path.dirname(file), { recursive: true });
  const temp = `${file}.${process.pid}-${crypto.randomBytes(4).toString('hex')}.tmp`;
  await fs.promises.writeFile(temp, text);
  await fs.promises.rename(temp, file);
}

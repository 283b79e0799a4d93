/**
 * One file from the hub into the cache: resumed with HTTP Range from `<file>.incomplete`,
 * retried with backoff when the connection drops, checked against the size and hash the hub
 * published, and renamed into place only once it is verified.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { IncomingMessage } from 'node:http';
import { XglmError } from '../errors.js';
import { SHA256_HEX, type RemoteFile } from './api.js';
import {
  HubError,
  asHubError,
  backoff,
  headerValue,
  hubGet,
  isRetryable,
  statusError,
  throwIfAborted,
  type HubClient,
  type RequestSubject,
} from './http.js';
import { withFileLock } from './lock.js';
import { INCOMPLETE_SUFFIX } from './paths.js';
import { renameIntoPlace } from '../files.js';

export type FilePhase = 'download' | 'retry' | 'verify' | 'done';

export interface FileProgress {
  phase: FilePhase;
  /** Bytes of this file on disk so far (including what an earlier run left). */
  bytesDone: number;
  /** Size of this file, once the hub said it. */
  bytesTotal: number | undefined;
  /** For `retry`: why the last attempt failed. */
  error?: unknown;
}

export interface DownloadTarget {
  /** The resolve URL: `{endpoint}/{repo}/resolve/{commit}/{file}`. */
  url: URL;
  file: RemoteFile;
  dest: string;
  commit: string;
  subject: RequestSubject;
}

export interface DownloadedFile {
  path: string;
  size: number;
  /** The sha256 the file was verified against, when the hub published one. */
  sha256: string | undefined;
  /** True when the file was already in the cache and nothing was requested. */
  cached: boolean;
}

/** What this download has learnt about the file; the hub's headers fill what the API left out. */
interface Expected {
  size: number | undefined;
  sha256: string | undefined;
}

export async function downloadFile(
  client: HubClient,
  target: DownloadTarget,
  onProgress: (progress: FileProgress) => void,
): Promise<DownloadedFile> {
  const cached = await cachedFile(target);
  if (cached) return cached;
  await fs.promises.mkdir(path.dirname(target.dest), { recursive: true });
  // Whoever held the lock may have just finished this very file.
  return withFileLock(client, target.dest, async () => (await cachedFile(target)) ?? download(client, target, onProgress));
}

/** A file is only ever renamed into place after verification, so a matching size is enough. */
async function cachedFile({ dest, file }: DownloadTarget): Promise<DownloadedFile | undefined> {
  const size = await statSize(dest);
  if (size === undefined || (file.size !== undefined && size !== file.size)) return undefined;
  return { path: dest, size, sha256: file.sha256, cached: true };
}

async function download(
  client: HubClient,
  target: DownloadTarget,
  onProgress: (progress: FileProgress) => void,
): Promise<DownloadedFile> {
  const { dest, file } = target;
  const partial = dest + INCOMPLETE_SUFFIX;
  const expected: Expected = { size: file.size, sha256: file.sha256 };
  for (let failures = 0; ; ) {
    const offset = (await statSize(partial)) ?? 0;
    if (expected.size !== undefined && offset > expected.size) {
      await fs.promises.rm(partial, { force: true });
      continue;
    }
    // An earlier run received every byte but stopped before verifying.
    if (expected.size !== undefined && offset === expected.size && offset > 0) break;
    try {
      await fetchInto(client, target, partial, offset, expected, onProgress);
      break;
    } catch (err) {
      throwIfAborted(client, err);
      if (((await statSize(partial)) ?? 0) > offset) failures = 0; // bytes arrived: the connection is worth keeping at
      if (!isRetryable(err) || failures >= client.retries) throw asHubError(err);
      failures++;
      onProgress({ phase: 'retry', bytesDone: (await statSize(partial)) ?? 0, bytesTotal: expected.size, error: err });
      await backoff(client, failures);
    }
  }
  const size = (await statSize(partial)) ?? 0;
  onProgress({ phase: 'verify', bytesDone: size, bytesTotal: expected.size });
  await verify(partial, file, expected, size);
  await renameIntoPlace(partial, dest);
  onProgress({ phase: 'done', bytesDone: size, bytesTotal: size });
  return { path: dest, size, sha256: expected.sha256, cached: false };
}

async function fetchInto(
  client: HubClient,
  target: DownloadTarget,
  partial: string,
  offset: number,
  expected: Expected,
  onProgress: (progress: FileProgress) => void,
): Promise<void> {
  const response = await hubGet(client, target.url, offset > 0 ? { range: `bytes=${offset}-` } : {});
  const { res, hubHeaders } = response;
  const status = res.statusCode ?? 0;
  if (status === 416 && offset > 0) {
    // "Range not satisfiable": either the partial file is already whole, or it is from another file.
    res.resume();
    if (contentRange(res)?.total === offset && expected.size === undefined) expected.size = offset;
    if (expected.size !== offset) await fs.promises.rm(partial, { force: true });
    throw rangeMismatch(`the hub refused bytes=${offset}-`);
  }
  if (status !== 200 && status !== 206) throw await statusError(client, response, target.subject);

  const servedCommit = headerValue(hubHeaders['x-repo-commit']);
  if (servedCommit && servedCommit !== target.commit) {
    res.resume();
    throw new HubError(`the hub served ${target.file.name} from commit ${servedCommit}, not ${target.commit}`, {
      url: target.url.href,
      hint: 'the repo changed during the download; run the command again',
    });
  }
  // For LFS files the hub's redirect carries the content's sha256 and size.
  const linkedEtag = unquoteEtag(headerValue(hubHeaders['x-linked-etag']));
  if (expected.sha256 === undefined && linkedEtag && SHA256_HEX.test(linkedEtag)) expected.sha256 = linkedEtag;
  const linkedSize = parseSize(headerValue(hubHeaders['x-linked-size']));

  let start = 0;
  let total: number | undefined;
  if (status === 206) {
    const range = contentRange(res);
    if (!range || range.start !== offset) {
      res.destroy();
      await fs.promises.rm(partial, { force: true });
      throw rangeMismatch(`the hub answered bytes=${offset}- with ${headerValue(res.headers['content-range']) ?? 'no Content-Range'}`);
    }
    start = offset;
    total = range.total;
  } else {
    // 200 to a Range request: the server ignored it; start over.
    total = parseSize(headerValue(res.headers['content-length']));
  }
  total ??= linkedSize;
  if (expected.size !== undefined && total !== undefined && total !== expected.size) {
    res.destroy();
    throw sizeMismatch(target.file.name, expected.size, total);
  }
  expected.size ??= total;

  const received = await receiveBody(res, partial, start, (bytesDone) =>
    onProgress({ phase: 'download', bytesDone, bytesTotal: expected.size }),
  );
  if (expected.size !== undefined && received < expected.size) {
    throw Object.assign(new Error(`${target.file.name}: the body ended after ${received} of ${expected.size} bytes`), {
      code: 'XGLM_SHORT_BODY',
    });
  }
}

/**
 * Writes the body to the partial file as each chunk arrives. Synchronous writes on 'data' keep
 * the file equal to every byte received, so after a dropped connection the Range request
 * starts exactly where the data stopped (nothing sits in a stream buffer to be lost).
 */
function receiveBody(res: IncomingMessage, partial: string, start: number, onBytes: (bytesDone: number) => void): Promise<number> {
  return new Promise((resolve, reject) => {
    let fd: number;
    try {
      fd = fs.openSync(partial, start > 0 ? 'a' : 'w');
    } catch (err) {
      res.destroy();
      reject(err);
      return;
    }
    let bytesDone = start;
    let settled = false;
    const settle = (err: unknown) => {
      if (settled) return;
      settled = true;
      fs.closeSync(fd);
      if (err) reject(err);
      else resolve(bytesDone);
    };
    res.on('data', (chunk: Buffer) => {
      try {
        for (let off = 0; off < chunk.length; ) off += fs.writeSync(fd, chunk, off);
        bytesDone += chunk.length;
        onBytes(bytesDone);
      } catch (err) {
        res.destroy();
        settle(err);
      }
    });
    res.on('end', () => settle(undefined));
    res.on('error', settle);
    res.on('close', () => {
      if (!res.complete) settle(Object.assign(new Error('aborted'), { code: 'ECONNRESET' }));
    });
  });
}

async function verify(partial: string, file: RemoteFile, expected: Expected, size: number): Promise<void> {
  if (expected.size !== undefined && size !== expected.size) {
    await fs.promises.rm(partial, { force: true });
    throw sizeMismatch(file.name, expected.size, size);
  }
  if (expected.sha256 !== undefined) {
    const actual = await hashFile(partial, 'sha256');
    if (actual !== expected.sha256) {
      await fs.promises.rm(partial, { force: true });
      throw checksumError(file.name, 'sha256', expected.sha256, actual);
    }
  } else if (file.gitBlobId !== undefined) {
    // Non-LFS files: the hub lists the git blob id, sha1("blob <size>\0" + content).
    const actual = await hashFile(partial, 'sha1', `blob ${size}\0`);
    if (actual !== file.gitBlobId) {
      await fs.promises.rm(partial, { force: true });
      throw checksumError(file.name, 'git blob sha1', file.gitBlobId, actual);
    }
  }
}

async function hashFile(file: string, algorithm: 'sha256' | 'sha1', prefix?: string): Promise<string> {
  const hash = crypto.createHash(algorithm);
  if (prefix) hash.update(prefix);
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) hash.update(chunk);
  return hash.digest('hex');
}

function checksumError(name: string, algorithm: string, expected: string, actual: string): XglmError {
  return new XglmError('ERR_XGLM_CHECKSUM', `${name}: ${algorithm} is ${actual}, the hub published ${expected}`, {
    hint: 'the download was corrupted on the way and has been deleted; run the command again',
  });
}

function sizeMismatch(name: string, expected: number, actual: number): XglmError {
  return new XglmError('ERR_XGLM_CHECKSUM', `${name}: ${actual} bytes, the hub published ${expected}`, {
    hint: 'the download does not match the hub listing and has been deleted; run the command again',
  });
}

/** Retryable: the next attempt starts from whatever the partial file now holds. */
function rangeMismatch(message: string): Error {
  return Object.assign(new Error(message), { code: 'XGLM_RANGE_RESET' });
}

function contentRange(res: IncomingMessage): { start: number; total: number | undefined } | undefined {
  // "bytes 100-199/1234", "bytes 100-199/*" or, for a 416, "bytes */1234"
  const match = /^bytes (?:(\d+)-\d+|\*)\/(\d+|\*)$/.exec(headerValue(res.headers['content-range'])?.trim() ?? '');
  if (!match) return undefined;
  return { start: match[1] === undefined ? -1 : Number(match[1]), total: match[2] === '*' ? undefined : Number(match[2]) };
}

function parseSize(value: string | undefined): number | undefined {
  if (value === undefined || !/^\d+$/.test(value.trim())) return undefined;
  const size = Number(value);
  return Number.isSafeInteger(size) ? size : undefined;
}

function unquoteEtag(value: string | undefined): string | undefined {
  return value?.replace(/^W\//, '').replace(/^"|"$/g, '');
}

async function statSize(file: string): Promise<number | undefined> {
  try {
    const stat = await fs.promises.stat(file);
    return stat.isFile() ? stat.size : undefined;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

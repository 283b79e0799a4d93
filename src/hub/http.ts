/**
 * HTTP for the hub on node's own http/https: redirects followed by hand (so the hub's headers
 * before the CDN redirect stay visible and the token never leaves the hub's origin), typed
 * errors with hints, and the retry policy shared by the API call and the downloads.
 */
import http from 'node:http';
import https from 'node:https';
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { XglmError } from '../errors.js';

const USER_AGENT = `xglm-node; node/${process.versions.node}`;
const MAX_REDIRECTS = 10;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
// 408/429 and gateway errors are the hub or CDN asking to come back later.
const RETRYABLE_STATUSES = new Set([408, 429, 500, 502, 503, 504]);
// Connection-level failures worth another try; ENOTFOUND (no such host) is not one of them.
const RETRYABLE_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'UND_ERR_SOCKET',
  'ERR_STREAM_PREMATURE_CLOSE',
  'XGLM_SHORT_BODY',
  'XGLM_RANGE_RESET',
]);

const FILE_SYSCALLS = new Set(['open', 'write', 'close', 'rename', 'mkdir', 'unlink', 'stat']);

/** An ERR_XGLM_HUB error; `status` is the HTTP status when the hub answered at all. */
export class HubError extends XglmError {
  readonly status: number | undefined;
  readonly url: string | undefined;

  constructor(message: string, options: { status?: number; url?: string; hint?: string; cause?: unknown } = {}) {
    super('ERR_XGLM_HUB', message, options);
    this.status = options.status;
    this.url = options.url;
  }
}

/** What every request needs to know; built once per pull. */
export interface HubClient {
  /** Origin the token belongs to; it is sent to no other origin. */
  endpoint: URL;
  token: string | undefined;
  signal: AbortSignal | undefined;
  /** A connection idle this long is dropped (and retried). */
  timeoutMs: number;
  retries: number;
  retryDelayMs: number;
}

export interface HubResponse {
  res: IncomingMessage;
  /** URL that finally answered (the CDN's for LFS files). */
  url: URL;
  /** Headers of the hub's own last answer, before the CDN: X-Repo-Commit, X-Linked-Etag, X-Linked-Size. */
  hubHeaders: IncomingHttpHeaders;
}

/** Sends a GET, following redirects; the Authorization header is only sent to the endpoint's origin. */
export async function hubGet(client: HubClient, url: URL, headers: Record<string, string> = {}): Promise<HubResponse> {
  let current = url;
  let hubHeaders: IncomingHttpHeaders | undefined;
  for (let hop = 0; ; hop++) {
    const sendToken = client.token !== undefined && current.origin === client.endpoint.origin;
    const res = await send(client, current, {
      ...headers,
      'user-agent': USER_AGENT,
      // Sizes and checksums are of the stored bytes; never let a proxy re-encode them.
      'accept-encoding': 'identity',
      ...(sendToken ? { authorization: `Bearer ${client.token}` } : {}),
    });
    // The last answer from the hub itself (a renamed repo redirects within the hub first).
    if (!hubHeaders || current.origin === client.endpoint.origin) hubHeaders = res.headers;
    const location = res.headers.location;
    if (!REDIRECT_STATUSES.has(res.statusCode ?? 0) || !location) return { res, url: current, hubHeaders };
    res.resume();
    if (hop >= MAX_REDIRECTS) throw new HubError(`too many redirects for ${url.href}`, { url: url.href });
    current = new URL(location, current);
    if (current.protocol !== 'https:' && current.protocol !== 'http:') {
      throw new HubError(`the hub redirected to an unsupported URL ${current.href}`, { url: url.href });
    }
  }
}

function send(client: HubClient, url: URL, headers: Record<string, string>): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const transport = url.protocol === 'https:' ? https : http;
    const req = transport.request(url, { method: 'GET', headers, signal: client.signal });
    // Covers connect, headers and every pause in the body: a stalled CDN becomes a retry.
    req.setTimeout(client.timeoutMs, () => {
      const err = Object.assign(new Error(`no data from ${url.host} for ${client.timeoutMs} ms`), { code: 'ETIMEDOUT' });
      req.destroy(err);
    });
    req.on('response', resolve);
    req.on('error', reject);
    req.end();
  });
}

/** Reads a small body (API JSON, error text) into a string, refusing more than `limit` bytes. */
export async function readBody(res: IncomingMessage, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of res as AsyncIterable<Buffer>) {
    length += chunk.length;
    if (length > limit) {
      res.destroy();
      throw new HubError(`the hub sent more than ${limit} bytes where a small reply was expected`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** What the request was for, so the error can name it and say what to do. */
export interface RequestSubject {
  repo: string;
  revision: string;
  file?: string;
}

/** Turns a non-2xx hub reply into a HubError with a hint; consumes the body. */
export async function statusError(client: HubClient, response: HubResponse, subject: RequestSubject): Promise<HubError> {
  const { res, url } = response;
  const status = res.statusCode ?? 0;
  const errorCode = headerValue(res.headers['x-error-code']);
  let detail = headerValue(res.headers['x-error-message']);
  if (!detail) {
    const body = await readBody(res, 64 * 1024).catch(() => '');
    detail = parseErrorBody(body);
  } else {
    res.resume();
  }
  const what = subject.file ? `${subject.file} in ${subject.repo}@${subject.revision}` : `${subject.repo}@${subject.revision}`;
  if (url.origin !== client.endpoint.origin) {
    // The CDN an LFS file redirected to: its signed link may have expired; the hub's hints do not apply.
    return new HubError(`the download server ${url.host} answered ${status} for ${what}${detail ? `: ${detail}` : ''}`, {
      status,
      url: url.href,
      hint: 'run the command again; the partial file is kept and resumed',
    });
  }
  const message = `the hub answered ${status} for ${what}${detail ? `: ${detail}` : ''}`;
  return new HubError(message, { status, url: url.href, hint: hintFor(status, errorCode, subject, client.token !== undefined) });
}

function hintFor(status: number, errorCode: string | undefined, subject: RequestSubject, hasToken: boolean): string | undefined {
  if (errorCode === 'GatedRepo') {
    return `accept the conditions on the model page (${subject.repo}) with your account, then set HF_TOKEN to one of its tokens`;
  }
  if (status === 401 || status === 403) {
    return hasToken
      ? `the token in HF_TOKEN has no access to ${subject.repo}; check the repo name and the token's permissions`
      : `set HF_TOKEN to a HuggingFace access token if ${subject.repo} is private or gated (and check the repo name)`;
  }
  if (status === 404) {
    if (errorCode === 'RevisionNotFound') return `check the revision "${subject.revision}" (a branch, tag or commit of ${subject.repo})`;
    if (errorCode === 'EntryNotFound') return `the file is listed but missing at this revision; try another --revision`;
    return `check the repo name "${subject.repo}" and the revision "${subject.revision}"`;
  }
  if (status === 429) return 'the hub is rate limiting this address; wait a little and run the command again';
  if (status >= 500) return 'the hub had a server error; run the command again later (finished files are kept)';
  return undefined;
}

function parseErrorBody(body: string): string | undefined {
  const text = body.trim();
  if (!text) return undefined;
  try {
    const parsed = JSON.parse(text) as unknown;
    if (parsed && typeof parsed === 'object' && typeof (parsed as { error?: unknown }).error === 'string') {
      return (parsed as { error: string }).error;
    }
  } catch {
    // Not JSON: an HTML error page says nothing useful in one line.
  }
  return text.length <= 200 && !text.startsWith('<') ? text : undefined;
}

export function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** True for failures another attempt may fix: dropped or stalled connections, 5xx, 429. */
export function isRetryable(err: unknown): boolean {
  if (err instanceof HubError) return err.status !== undefined && RETRYABLE_STATUSES.has(err.status);
  if (err instanceof XglmError) return false;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && RETRYABLE_CODES.has(code)) return true;
  // node reports a body cut short as Error('aborted') with code ECONNRESET; older versions had no code.
  return err instanceof Error && (err.message === 'aborted' || err.message === 'socket hang up');
}

/** Throws ERR_XGLM_ABORTED when the caller's signal fired; call it first in every catch. */
export function throwIfAborted(client: HubClient, cause?: unknown): void {
  if (client.signal?.aborted) {
    throw new XglmError('ERR_XGLM_ABORTED', 'download aborted', {
      hint: 'run the command again to resume; partial files are kept',
      cause: cause ?? client.signal.reason,
    });
  }
}

/** Exponential backoff with jitter: ~d, 2d, 4d … capped at 30 s; resolves early into an abort. */
export async function backoff(client: HubClient, failures: number): Promise<void> {
  const base = Math.min(client.retryDelayMs * 2 ** (failures - 1), 30_000);
  const delay = base / 2 + Math.random() * (base / 2);
  try {
    await sleep(delay, undefined, { signal: client.signal });
  } catch (err) {
    throwIfAborted(client, err);
    throw err;
  }
}

/** Runs `attempt` until it succeeds, fails for good, or used up `client.retries` retries. */
export async function withRetries<T>(client: HubClient, attempt: () => Promise<T>): Promise<T> {
  for (let failures = 0; ; ) {
    try {
      return await attempt();
    } catch (err) {
      throwIfAborted(client, err);
      if (!isRetryable(err) || failures >= client.retries) throw asHubError(err);
      failures++;
      await backoff(client, failures);
    }
  }
}

/** Wraps a raw network error as a HubError; typed errors pass through. */
export function asHubError(err: unknown): unknown {
  if (err instanceof XglmError) return err;
  const { code, syscall, path } = (err ?? {}) as { code?: unknown; syscall?: unknown; path?: unknown };
  const message = err instanceof Error ? err.message : String(err);
  // Not from the network or the disk (e.g. thrown by an onProgress callback): pass it on as it is.
  if (typeof code !== 'string' && !isRetryable(err)) return err;
  if (typeof syscall === 'string' && FILE_SYSCALLS.has(syscall) && !(typeof code === 'string' && RETRYABLE_CODES.has(code))) {
    // A local file system failure (ENOSPC, EACCES …), not the network's.
    return new HubError(`cannot write the download${typeof path === 'string' ? ` to ${path}` : ''}: ${message}`, {
      cause: err,
      hint: 'free some disk space or point XGLM_CACHE_DIR at a writable folder',
    });
  }
  return new HubError(`cannot reach the hub: ${message}${typeof code === 'string' ? ` (${code})` : ''}`, {
    cause: err,
    hint: 'check the network connection, or HF_ENDPOINT if you use a mirror; finished files are kept',
  });
}

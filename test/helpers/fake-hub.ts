/**
 * A local stand-in for the HuggingFace hub, for the pull tests (no network beyond 127.0.0.1).
 *
 * Two listeners on random ports: the hub (API + resolve URLs) and a "CDN" on another origin
 * that LFS resolves redirect to, as huggingface.co redirects to its CDN. Routes and headers
 * follow the real hub:
 *   GET /api/models/{repo}/revision/{rev}[?blobs=true] → { id, sha, siblings: [{ rfilename, size, blobId, lfs }] }
 *   GET /{repo}/resolve/{rev}/{file}  → 200 + body (ETag = git blob sha1) for small files;
 *                                       302 to the CDN (X-Linked-Etag = sha256, X-Linked-Size) for LFS files
 *   errors carry X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound) and X-Error-Message;
 *   a renamed repo's old id answers a relative 307 to the new one.
 * Bodies honour `Range: bytes=N-` (206, Content-Range; 416 past the end). Every request is logged
 * with its Range and Authorization headers; `faults` injects failures.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import path from 'node:path';

export interface FakeRepo {
  /** Folder whose files the repo holds. */
  dir: string;
  /** Files to list, default: every file in `dir`. */
  files?: string[];
  /** Makes the repo private: only `Authorization: Bearer <token>` sees it. */
  token?: string;
  /** Old ids of a renamed repo: requests for them get a relative 307 to this repo, as on the hub. */
  formerIds?: string[];
}

export interface FakeHubFaults {
  /** The first body of this file sends `afterBytes` bytes (of the full length it announced), then closes the connection. */
  dropOnce?: { file: string; afterBytes: number };
  /** The body of this file sends `afterBytes` bytes, then hangs until the client gives up or the hub closes. */
  stall?: { file: string; afterBytes: number };
  /** This file's bytes are served with one byte changed (same length); the listing keeps the real sha256. */
  corrupt?: { file: string };
  /** Bodies ignore Range and always answer 200 with the whole file, as some proxies do. */
  ignoreRange?: boolean;
  /** The API ignores `blobs=true` (as a bare mirror might): no sizes, no LFS hashes in the listing. */
  listingWithoutBlobs?: boolean;
  /** The next `count` API requests answer `status`. */
  failApi?: { status: number; count: number };
}

export interface RequestRecord {
  server: 'hub' | 'cdn';
  path: string;
  range: string | undefined;
  authorization: string | undefined;
  status: number;
  /** Repo file a body was served for. */
  file?: string;
  /** Body bytes written before a drop or stall. */
  cutAt?: number;
}

export interface FakeHub {
  /** Pass as `endpoint` / HF_ENDPOINT. */
  endpoint: string;
  cdnOrigin: string;
  requests: RequestRecord[];
  faults: FakeHubFaults;
  /** The commit sha a repo's `main` points at. */
  commitOf(repo: string): string;
  /** Requests that asked for a file (resolve or CDN), as opposed to the API. */
  fileRequests(): RequestRecord[];
  close(): Promise<void>;
}

// The hub's default .gitattributes stores these in LFS.
const LFS_EXTENSIONS = ['.safetensors', '.bin', '.model', '.msgpack', '.h5', '.gguf'];

interface ServedFile {
  name: string;
  content: Buffer;
  sha256: string;
  gitBlobId: string;
  lfs: boolean;
  /** For LFS files: the blob id of the pointer file git stores. */
  pointerBlobId: string;
  pointerSize: number;
}

interface ServedRepo {
  id: string;
  commit: string;
  token: string | undefined;
  files: Map<string, ServedFile>;
}

export async function startFakeHub(repos: Record<string, FakeRepo>, faults: FakeHubFaults = {}): Promise<FakeHub> {
  const served = new Map<string, ServedRepo>();
  for (const [id, repo] of Object.entries(repos)) served.set(id, loadRepo(id, repo));
  const renames = new Map<string, string>();
  for (const [id, repo] of Object.entries(repos)) for (const former of repo.formerIds ?? []) renames.set(former, id);
  const byLfsOid = new Map<string, ServedFile>();
  for (const repo of served.values()) for (const file of repo.files.values()) if (file.lfs) byLfsOid.set(file.sha256, file);

  const requests: RequestRecord[] = [];
  const openSockets = new Set<Socket>();
  const dropped = new Set<string>();
  let cdnOrigin = '';

  const hub = http.createServer((req, res) => {
    const record = newRecord('hub', req);
    requests.push(record);
    const url = new URL(req.url ?? '/', 'http://hub');
    const api = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/([^/]+)$/.exec(url.pathname);
    const resolve = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    if (req.method !== 'GET' || (!api && !resolve)) return fail(res, record, 404, undefined, 'Not Found');

    const [repoId, revision] = [decodeURIComponent((api ?? resolve)![1]!), decodeURIComponent((api ?? resolve)![2]!)];
    const renamedTo = renames.get(repoId);
    if (renamedTo) {
      record.status = 307;
      res.writeHead(307, { location: url.pathname.replace(repoId, renamedTo) + url.search, 'content-length': '0' });
      res.end();
      return;
    }
    const repo = served.get(repoId);
    if (!repo) return fail(res, record, 404, 'RepoNotFound', 'Repository not found');
    if (repo.token !== undefined && req.headers.authorization !== `Bearer ${repo.token}`) {
      const message = req.headers.authorization ? 'Invalid credentials in Authorization header' : 'Access to this model is restricted';
      return fail(res, record, 401, 'RepoNotFound', message);
    }
    if (revision !== 'main' && revision !== repo.commit) return fail(res, record, 404, 'RevisionNotFound', `Invalid rev id: ${revision}`);

    if (api) {
      if (faults.failApi && faults.failApi.count > 0) {
        faults.failApi.count--;
        return fail(res, record, faults.failApi.status, undefined, 'Service unavailable');
      }
      return sendJson(res, record, listing(repo, url.searchParams.get('blobs') === 'true' && !faults.listingWithoutBlobs));
    }
    const file = repo.files.get(resolve![3]!.split('/').map(decodeURIComponent).join('/'));
    if (!file) return fail(res, record, 404, 'EntryNotFound', `${resolve![3]} does not exist on "${revision}"`);
    res.setHeader('x-repo-commit', repo.commit);
    if (file.lfs) {
      record.status = 302;
      res.writeHead(302, {
        location: `${cdnOrigin}/cdn/${file.sha256}?filename=${encodeURIComponent(file.name)}`,
        etag: `"${file.pointerBlobId}"`,
        'x-linked-etag': `"${file.sha256}"`,
        'x-linked-size': String(file.content.length),
        'content-length': '0',
      });
      return res.end();
    }
    res.setHeader('etag', `"${file.gitBlobId}"`);
    serveBody(req, res, record, file);
  });

  const cdn = http.createServer((req, res) => {
    const record = newRecord('cdn', req);
    requests.push(record);
    const match = /^\/cdn\/([0-9a-f]{64})$/.exec(new URL(req.url ?? '/', 'http://cdn').pathname);
    const file = match ? byLfsOid.get(match[1]!) : undefined;
    if (req.method !== 'GET' || !file) return fail(res, record, 404, undefined, 'NoSuchKey');
    res.setHeader('etag', `"${file.sha256}"`);
    serveBody(req, res, record, file);
  });

  function serveBody(req: http.IncomingMessage, res: http.ServerResponse, record: RequestRecord, file: ServedFile): void {
    record.file = file.name;
    let content = file.content;
    if (faults.corrupt?.file === file.name) {
      content = Buffer.from(content);
      const middle = content.length >> 1;
      content[middle] = content[middle]! ^ 0xff;
    }
    let start = 0;
    const range = faults.ignoreRange ? undefined : /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (range) {
      start = Number(range[1]);
      const end = range[2] ? Math.min(Number(range[2]), content.length - 1) : content.length - 1;
      if (start >= content.length) {
        record.status = 416;
        res.writeHead(416, { 'content-range': `bytes */${content.length}` });
        res.end();
        return;
      }
      content = content.subarray(start, end + 1);
      record.status = 206;
      res.writeHead(206, {
        'content-range': `bytes ${start}-${end}/${file.content.length}`,
        'content-length': String(content.length),
        'accept-ranges': 'bytes',
      });
    } else {
      record.status = 200;
      res.writeHead(200, { 'content-length': String(content.length), 'accept-ranges': 'bytes' });
    }
    const drop = faults.dropOnce?.file === file.name && !dropped.has(file.name) ? faults.dropOnce : undefined;
    const stall = faults.stall?.file === file.name ? faults.stall : undefined;
    const cut = drop ?? stall;
    if (!cut || cut.afterBytes >= content.length) {
      res.end(content);
      return;
    }
    if (drop) dropped.add(file.name);
    record.cutAt = start + cut.afterBytes;
    // Flush the first bytes, then close (drop) or go silent (stall) with the body unfinished.
    res.write(content.subarray(0, cut.afterBytes), () => {
      if (drop) res.socket?.destroy();
    });
  }

  function newRecord(server: 'hub' | 'cdn', req: http.IncomingMessage): RequestRecord {
    return { server, path: req.url ?? '', range: req.headers.range, authorization: req.headers.authorization, status: 0 };
  }

  for (const server of [hub, cdn]) {
    server.on('connection', (socket) => {
      openSockets.add(socket);
      socket.on('close', () => openSockets.delete(socket));
    });
  }
  const hubPort = await listen(hub);
  const cdnPort = await listen(cdn);
  cdnOrigin = `http://127.0.0.1:${cdnPort}`;

  return {
    endpoint: `http://127.0.0.1:${hubPort}`,
    cdnOrigin,
    requests,
    faults,
    commitOf: (repo) => served.get(repo)!.commit,
    fileRequests: () => requests.filter((r) => r.server === 'cdn' || r.path.includes('/resolve/')),
    close: async () => {
      for (const socket of openSockets) socket.destroy();
      await Promise.all([hub, cdn].map((server) => new Promise((done) => server.close(done))));
    },
  };
}

function loadRepo(id: string, repo: FakeRepo): ServedRepo {
  const names = repo.files ?? fs.readdirSync(repo.dir).filter((name) => fs.statSync(path.join(repo.dir, name)).isFile());
  const files = new Map<string, ServedFile>();
  for (const name of names.sort()) {
    const content = fs.readFileSync(path.join(repo.dir, name));
    const sha256 = crypto.createHash('sha256').update(content).digest('hex');
    const pointer = Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${sha256}\nsize ${content.length}\n`);
    files.set(name, {
      name,
      content,
      sha256,
      gitBlobId: gitBlobId(content),
      lfs: LFS_EXTENSIONS.includes(path.extname(name)),
      pointerBlobId: gitBlobId(pointer),
      pointerSize: pointer.length,
    });
  }
  // A stable fake commit: the same files give the same sha.
  const commit = crypto
    .createHash('sha1')
    .update(id)
    .update([...files.values()].map((f) => `${f.name}:${f.sha256}`).join('\n'))
    .digest('hex');
  return { id, commit, token: repo.token, files };
}

function listing(repo: ServedRepo, blobs: boolean): unknown {
  const siblings = [...repo.files.values()].map((file) =>
    blobs
      ? {
          rfilename: file.name,
          size: file.content.length,
          blobId: file.lfs ? file.pointerBlobId : file.gitBlobId,
          ...(file.lfs ? { lfs: { sha256: file.sha256, size: file.content.length, pointerSize: file.pointerSize } } : {}),
        }
      : { rfilename: file.name },
  );
  return { _id: repo.commit.slice(0, 24), id: repo.id, modelId: repo.id, sha: repo.commit, private: repo.token !== undefined, siblings };
}

function gitBlobId(content: Buffer): string {
  return crypto.createHash('sha1').update(`blob ${content.length}\0`).update(content).digest('hex');
}

function sendJson(res: http.ServerResponse, record: RequestRecord, body: unknown): void {
  const text = JSON.stringify(body);
  record.status = 200;
  res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function fail(res: http.ServerResponse, record: RequestRecord, status: number, errorCode: string | undefined, message: string): void {
  record.status = status;
  const text = JSON.stringify({ error: message });
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'x-error-message': message,
    ...(errorCode ? { 'x-error-code': errorCode } : {}),
  });
  res.end(text);
}

function listen(server: http.Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
  });
}

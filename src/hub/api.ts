/**
 * The hub's model API: which commit a revision points at, and the files it holds.
 *
 * `GET {endpoint}/api/models/{repo}/revision/{revision}?blobs=true` answers
 * `{ sha, siblings: [{ rfilename, size, blobId, lfs?: { sha256, size } }] }`; the tree API spells
 * the LFS hash `lfs.oid`, so both spellings are read. Without `blobs=true` (some mirrors) sizes
 * and hashes are simply unknown and the download checks what the file answers instead.
 */
import { HubError, hubGet, readBody, statusError, withRetries, type HubClient } from './http.js';
import { isSafeRepoFile } from './paths.js';

// facebook/xglm-7.5B lists a few dozen files; a reply this large is not a model listing.
const MAX_API_REPLY_BYTES = 16 * 1024 * 1024;
export const SHA256_HEX = /^[0-9a-f]{64}$/;
const GIT_SHA1_HEX = /^[0-9a-f]{40}$/;

export interface RemoteFile {
  /** Path inside the repo (`rfilename`). */
  name: string;
  /** Size of the real content (for LFS files the LFS object's size, not the pointer's). */
  size: number | undefined;
  /** sha256 of the content; the hub gives it for LFS files. */
  sha256: string | undefined;
  /** Git blob sha1 of the content; meaningful for non-LFS files only. */
  gitBlobId: string | undefined;
}

export interface RepoListing {
  repo: string;
  revision: string;
  /** The 40-hex commit `revision` resolved to. */
  commit: string;
  files: Map<string, RemoteFile>;
}

export async function fetchRepoListing(client: HubClient, repo: string, revision: string): Promise<RepoListing> {
  const url = new URL(`${basePath(client)}/api/models/${repo}/revision/${encodeURIComponent(revision)}`, client.endpoint);
  url.searchParams.set('blobs', 'true');
  const body = await withRetries(client, async () => {
    const response = await hubGet(client, url, { accept: 'application/json' });
    if (response.res.statusCode !== 200) throw await statusError(client, response, { repo, revision });
    return readBody(response.res, MAX_API_REPLY_BYTES);
  });
  return parseListing(body, repo, revision, url.href);
}

/** A mirror may live under a path (`https://host/hf`); keep it in front of every route. */
export function basePath(client: HubClient): string {
  return client.endpoint.pathname.replace(/\/+$/, '');
}

function parseListing(body: string, repo: string, revision: string, url: string): RepoListing {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch (cause) {
    throw new HubError(`the hub's reply for ${repo}@${revision} is not JSON`, { url, cause, hint: 'check HF_ENDPOINT' });
  }
  const info = json as { sha?: unknown; siblings?: unknown };
  if (typeof info?.sha !== 'string' || !GIT_SHA1_HEX.test(info.sha) || !Array.isArray(info.siblings)) {
    throw new HubError(`the hub's reply for ${repo}@${revision} has no commit sha or file list`, {
      url,
      hint: 'check HF_ENDPOINT; it must point at a HuggingFace hub or a mirror of its API',
    });
  }
  const files = new Map<string, RemoteFile>();
  for (const sibling of info.siblings as unknown[]) {
    const file = parseSibling(sibling);
    if (file) files.set(file.name, file);
  }
  return { repo, revision, commit: info.sha, files };
}

function parseSibling(sibling: unknown): RemoteFile | undefined {
  if (!sibling || typeof sibling !== 'object') return undefined;
  const entry = sibling as { rfilename?: unknown; size?: unknown; blobId?: unknown; lfs?: unknown };
  // A name that cannot be a path on disk is left out of the listing; nothing selects it then.
  if (typeof entry.rfilename !== 'string' || !isSafeRepoFile(entry.rfilename)) return undefined;
  const lfs = entry.lfs && typeof entry.lfs === 'object' ? (entry.lfs as { sha256?: unknown; oid?: unknown; size?: unknown }) : undefined;
  const lfsHash = lfs ? (typeof lfs.sha256 === 'string' ? lfs.sha256 : lfs.oid) : undefined;
  const size = lfs && isSize(lfs.size) ? lfs.size : isSize(entry.size) ? entry.size : undefined;
  return {
    name: entry.rfilename,
    size,
    sha256: typeof lfsHash === 'string' && SHA256_HEX.test(lfsHash) ? lfsHash : undefined,
    gitBlobId: !lfs && typeof entry.blobId === 'string' && GIT_SHA1_HEX.test(entry.blobId) ? entry.blobId : undefined,
  };
}

function isSize(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

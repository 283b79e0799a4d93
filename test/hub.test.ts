import test from 'ava';
import type { ExecutionContext } from 'ava';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ProgressEvent as ConvertProgressEvent } from '../src/convert/index.js';
import { XglmError } from '../src/errors.js';
import { GgufReader } from '../src/gguf/index.js';
import { HubError, pull, pullFiles, type PullFilesOptions, type PullProgress } from '../src/hub/index.js';
import { startFakeHub, type FakeHub, type FakeHubFaults, type FakeRepo } from './helpers/fake-hub.js';
import { fixtureDir } from './helpers/fixtures.js';

const FIXTURE = fixtureDir('tiny-a');
const FIXTURE_FILES = [
  'config.json',
  'model.safetensors',
  'pytorch_model.bin',
  'sentencepiece.bpe.model',
  'special_tokens_map.json',
  'tokenizer_config.json',
];
/** What conversion needs from tiny-a: safetensors is preferred over pytorch_model.bin. */
const WANTED = ['config.json', 'sentencepiece.bpe.model', 'tokenizer_config.json', 'special_tokens_map.json', 'model.safetensors'];
const REPO = 'test-org/tiny-a';

const fixtureBytes = (name: string) => fs.readFileSync(path.join(FIXTURE, name));
const sha256 = (bytes: Buffer) => crypto.createHash('sha256').update(bytes).digest('hex');

async function setup(
  t: ExecutionContext,
  faults: FakeHubFaults = {},
  repos: Record<string, FakeRepo> = { [REPO]: { dir: FIXTURE, files: FIXTURE_FILES } },
): Promise<{ hub: FakeHub; cacheDir: string; options: PullFilesOptions }> {
  const hub = await startFakeHub(repos, faults);
  const cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'xglm-hub-test-'));
  t.teardown(async () => {
    await hub.close();
    fs.rmSync(cacheDir, { recursive: true, force: true });
  });
  return { hub, cacheDir, options: { endpoint: hub.endpoint, cacheDir, retryDelayMs: 1, timeoutMs: 10_000 } };
}

function assertSameAsFixture(t: ExecutionContext, dir: string, names: string[]): void {
  for (const name of names) {
    t.true(fixtureBytes(name).equals(fs.readFileSync(path.join(dir, name))), `${name} differs from the fixture`);
  }
}

async function hubError(t: ExecutionContext, promise: Promise<unknown>): Promise<HubError> {
  const err = await t.throwsAsync(promise, { instanceOf: HubError });
  t.is(err!.code, 'ERR_XGLM_HUB');
  return err!;
}

test('pullFiles downloads config, tokenizer and safetensors byte-identical into <cache>/hub/<repo>/<commit>', async (t) => {
  const { hub, cacheDir, options } = await setup(t);
  const result = await pullFiles(REPO, options);
  const commit = hub.commitOf(REPO);
  t.is(result.commit, commit);
  t.is(result.dir, path.join(cacheDir, 'hub', 'test-org', 'tiny-a', commit));
  t.deepEqual(result.files.map((f) => f.name).sort(), [...WANTED].sort());
  assertSameAsFixture(t, result.dir, WANTED);
  t.false(fs.existsSync(path.join(result.dir, 'pytorch_model.bin')), 'pytorch_model.bin is not needed next to safetensors');
  const weights = result.files.find((f) => f.name === 'model.safetensors')!;
  t.is(weights.sha256, sha256(fixtureBytes('model.safetensors')));
  t.is(weights.size, fixtureBytes('model.safetensors').length);
  t.false(weights.cached);
  t.deepEqual(fs.readdirSync(result.dir).filter((n) => n.endsWith('.incomplete')), []);
  // LFS files came from the CDN origin after a redirect; small files from the hub itself.
  const cdnFiles = hub.requests.filter((r) => r.server === 'cdn').map((r) => r.file);
  t.deepEqual(cdnFiles.sort(), ['model.safetensors', 'sentencepiece.bpe.model']);
});

test('pytorch_model.bin is pulled when the repo has no safetensors', async (t) => {
  const files = FIXTURE_FILES.filter((f) => f !== 'model.safetensors');
  const { options } = await setup(t, {}, { [REPO]: { dir: FIXTURE, files } });
  const result = await pullFiles(REPO, options);
  t.true(result.files.some((f) => f.name === 'pytorch_model.bin'));
  assertSameAsFixture(t, result.dir, ['pytorch_model.bin', 'config.json', 'sentencepiece.bpe.model']);
});

/** Splits the fixture's model.safetensors into two valid shards plus the index transformers writes. */
function writeShardedCheckpoint(dir: string): string[] {
  const whole = fixtureBytes('model.safetensors');
  const headerLength = Number(whole.readBigUInt64LE(0));
  type TensorEntry = { dtype: string; shape: number[]; data_offsets: [number, number] };
  const header = JSON.parse(whole.subarray(8, 8 + headerLength).toString('utf8')) as Record<string, TensorEntry>;
  const data = whole.subarray(8 + headerLength);
  const names = Object.keys(header).filter((n) => n !== '__metadata__').sort();
  const halves = [names.slice(0, names.length >> 1), names.slice(names.length >> 1)];
  const shardNames = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'];
  const weightMap: Record<string, string> = {};
  halves.forEach((tensors, i) => {
    const shardHeader: Record<string, unknown> = { __metadata__: { format: 'pt' } };
    const parts: Buffer[] = [];
    let offset = 0;
    for (const name of tensors) {
      const [begin, end] = header[name]!.data_offsets;
      shardHeader[name] = { ...header[name], data_offsets: [offset, offset + end - begin] };
      parts.push(data.subarray(begin, end));
      offset += end - begin;
      weightMap[name] = shardNames[i]!;
    }
    let json = JSON.stringify(shardHeader);
    json += ' '.repeat((8 - (json.length % 8)) % 8);
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(BigInt(json.length));
    fs.writeFileSync(path.join(dir, shardNames[i]!), Buffer.concat([prefix, Buffer.from(json), ...parts]));
  });
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: data.length }, weight_map: weightMap }));
  for (const name of ['config.json', 'sentencepiece.bpe.model', 'pytorch_model.bin']) fs.copyFileSync(path.join(FIXTURE, name), path.join(dir, name));
  return shardNames;
}

test('sharded safetensors: the index is read and exactly its shards are pulled', async (t) => {
  const source = fs.mkdtempSync(path.join(os.tmpdir(), 'xglm-hub-sharded-'));
  t.teardown(() => fs.rmSync(source, { recursive: true, force: true }));
  const shards = writeShardedCheckpoint(source);
  const { options } = await setup(t, {}, { 'test-org/sharded': { dir: source } });
  const events: PullProgress[] = [];
  const result = await pullFiles('test-org/sharded', { ...options, onProgress: (p) => events.push(p) });
  const expected = ['config.json', 'sentencepiece.bpe.model', 'model.safetensors.index.json', ...shards];
  t.deepEqual(result.files.map((f) => f.name), expected);
  for (const name of expected) t.true(fs.readFileSync(path.join(source, name)).equals(fs.readFileSync(path.join(result.dir, name))));
  t.is(events.at(-1)!.fileCount, expected.length);
  t.is(events.at(-1)!.totalBytesDone, expected.reduce((sum, name) => sum + fs.statSync(path.join(source, name)).size, 0));
});

test('a dropped connection resumes with a Range request from the byte where it stopped', async (t) => {
  const size = fixtureBytes('model.safetensors').length;
  const dropAt = 300_001;
  t.true(dropAt < size);
  const { hub, options } = await setup(t, { dropOnce: { file: 'model.safetensors', afterBytes: dropAt } });
  const retries: PullProgress[] = [];
  const result = await pullFiles(REPO, { ...options, onProgress: (p) => p.phase === 'retry' && retries.push(p) });
  assertSameAsFixture(t, result.dir, ['model.safetensors']);

  const bodies = hub.requests.filter((r) => r.server === 'cdn' && r.file === 'model.safetensors');
  t.is(bodies.length, 2);
  t.is(bodies[0]!.range, undefined);
  t.is(bodies[0]!.cutAt, dropAt);
  t.is(bodies[1]!.range, `bytes=${dropAt}-`);
  t.is(bodies[1]!.status, 206);
  t.is(retries.length, 1);
  t.is(retries[0]!.bytesDone, dropAt);
});

test('a server that ignores Range after a drop still yields the exact file', async (t) => {
  const { hub, options } = await setup(t, { dropOnce: { file: 'model.safetensors', afterBytes: 65_536 }, ignoreRange: true });
  const result = await pullFiles(REPO, options);
  assertSameAsFixture(t, result.dir, ['model.safetensors']);
  const bodies = hub.requests.filter((r) => r.server === 'cdn' && r.file === 'model.safetensors');
  t.deepEqual(
    bodies.map((r) => [r.range, r.status]),
    [
      [undefined, 200],
      ['bytes=65536-', 200],
    ],
  );
});

test('a connection that goes silent is timed out and resumed, as often as it keeps making progress', async (t) => {
  const size = fixtureBytes('model.safetensors').length;
  const step = 300_000;
  // Every body of the file stalls after `step` bytes: four attempts, each resumed where the last stopped.
  const { hub, options } = await setup(t, { stall: { file: 'model.safetensors', afterBytes: step } });
  const result = await pullFiles(REPO, { ...options, timeoutMs: 500, retries: 3 });
  assertSameAsFixture(t, result.dir, ['model.safetensors']);
  const ranges = hub.requests.filter((r) => r.server === 'cdn' && r.file === 'model.safetensors').map((r) => r.range);
  const expected: (string | undefined)[] = [undefined];
  for (let offset = step; offset < size; offset += step) expected.push(`bytes=${offset}-`);
  // A loaded machine may add a spurious timeout (a repeated range); every stall point must be resumed from.
  t.deepEqual([...new Set(ranges)], expected);
});

test('a second pull is served from the cache: the hub sees no file requests', async (t) => {
  const { hub, options } = await setup(t);
  const first = await pullFiles(REPO, options);
  const fileRequests = hub.fileRequests().length;
  t.true(fileRequests >= WANTED.length);

  const cachedEvents: string[] = [];
  const second = await pullFiles(REPO, { ...options, onProgress: (p) => p.phase === 'cached' && cachedEvents.push(p.file) });
  t.is(hub.fileRequests().length, fileRequests);
  t.is(second.dir, first.dir);
  t.true(second.files.every((f) => f.cached));
  t.deepEqual(cachedEvents.sort(), [...WANTED].sort());

  // A pinned commit, or offline mode, needs no hub at all once the snapshot is complete.
  await hub.close();
  const pinned = await pullFiles(REPO, { ...options, revision: first.commit });
  t.true(pinned.fromCache);
  const offline = await pullFiles(REPO, { ...options, offline: true });
  t.true(offline.fromCache);
  t.is(offline.commit, first.commit);
  assertSameAsFixture(t, offline.dir, WANTED);
});

test('an unreachable hub falls back to a complete cached snapshot of the same revision', async (t) => {
  const { hub, options } = await setup(t);
  await pullFiles(REPO, options);
  await hub.close();
  const result = await pullFiles(REPO, { ...options, retries: 0 });
  t.true(result.fromCache);
  assertSameAsFixture(t, result.dir, WANTED);
  // Never pulled: the same failure is an error that says the hub cannot be reached.
  const err = await hubError(t, pullFiles('test-org/other', { ...options, retries: 0 }));
  t.is(err.status, undefined);
  t.regex(err.message, /cannot reach the hub/);
});

test('two concurrent pulls into one cache download each file once and both get the whole snapshot', async (t) => {
  const { hub, options } = await setup(t);
  const [a, b] = await Promise.all([pullFiles(REPO, options), pullFiles(REPO, options)]);
  t.is(a.dir, b.dir);
  assertSameAsFixture(t, a.dir, WANTED);
  const bodies = hub.requests.filter((r) => r.file !== undefined).map((r) => r.file!);
  t.deepEqual(bodies.sort(), [...WANTED].sort());
  t.deepEqual(fs.readdirSync(a.dir).filter((n) => n.endsWith('.lock')), []);
});

test('a lock held by a live process makes the pull wait; a dead owner\'s lock is taken over', async (t) => {
  const { hub, options } = await setup(t);
  const dir = path.join(options.cacheDir!, 'hub', 'test-org', 'tiny-a', hub.commitOf(REPO));
  const lock = path.join(dir, 'model.safetensors.lock');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(lock, String(process.ppid)); // the test runner: alive for the whole test

  const err = await t.throwsAsync(pullFiles(REPO, { ...options, signal: AbortSignal.timeout(500) }), { instanceOf: XglmError });
  t.is(err!.code, 'ERR_XGLM_ABORTED');
  t.false(hub.requests.some((r) => r.file === 'model.safetensors'));

  const deadPid = spawnSync(process.execPath, ['-e', '0']).pid!;
  fs.writeFileSync(lock, String(deadPid));
  const result = await pullFiles(REPO, options);
  assertSameAsFixture(t, result.dir, WANTED);
  t.false(fs.existsSync(lock));
});

test('an unknown repo is a 404 ERR_XGLM_HUB with a hint to check the name', async (t) => {
  const { hub, options } = await setup(t);
  const err = await hubError(t, pullFiles('test-org/no-such-model', options));
  t.is(err.status, 404);
  t.regex(err.hint ?? '', /check the repo name/);
  t.is(hub.fileRequests().length, 0);
});

test('an unknown revision is a 404 with a hint about the revision', async (t) => {
  const { options } = await setup(t);
  const err = await hubError(t, pullFiles(REPO, { ...options, revision: 'v9' }));
  t.is(err.status, 404);
  t.regex(err.hint ?? '', /revision "v9"/);
});

test('a private repo: 401 without a token (hint: HF_TOKEN), downloads with it, token never sent to the CDN', async (t) => {
  const token = 'hf_test_0123456789';
  const { hub, options } = await setup(t, {}, { [REPO]: { dir: FIXTURE, files: FIXTURE_FILES, token } });
  const denied = await hubError(t, pullFiles(REPO, options));
  t.is(denied.status, 401);
  t.regex(denied.hint ?? '', /set HF_TOKEN/);

  const wrong = await hubError(t, pullFiles(REPO, { ...options, token: 'hf_wrong' }));
  t.is(wrong.status, 401);
  t.regex(wrong.hint ?? '', /has no access/);

  const result = await pullFiles(REPO, { ...options, token });
  assertSameAsFixture(t, result.dir, WANTED);
  const hubFiles = hub.requests.filter((r) => r.server === 'hub' && r.status < 400);
  t.true(hubFiles.length > 0);
  t.true(hubFiles.every((r) => r.authorization === `Bearer ${token}`));
  const cdn = hub.requests.filter((r) => r.server === 'cdn');
  t.true(cdn.length > 0);
  t.true(cdn.every((r) => r.authorization === undefined));
});

test('a renamed repo: the hub\'s relative redirect is followed and keeps the token (same origin)', async (t) => {
  const token = 'hf_renamed';
  const { hub, options } = await setup(t, {}, { [REPO]: { dir: FIXTURE, files: FIXTURE_FILES, token, formerIds: ['old-org/tiny-a'] } });
  const result = await pullFiles('old-org/tiny-a', { ...options, token });
  t.is(result.commit, hub.commitOf(REPO));
  assertSameAsFixture(t, result.dir, WANTED);
  const redirects = hub.requests.filter((r) => r.status === 307);
  t.true(redirects.length > 0);
  t.true(hub.requests.filter((r) => r.server === 'hub').every((r) => r.authorization === `Bearer ${token}`));
  t.true(hub.requests.filter((r) => r.server === 'cdn').every((r) => r.authorization === undefined));
});

test('without sizes in the listing (a bare mirror), the resolve headers give the sha256: corruption is still caught', async (t) => {
  const { hub, options } = await setup(t, { listingWithoutBlobs: true, corrupt: { file: 'model.safetensors' } });
  const err = await t.throwsAsync(pullFiles(REPO, options), { instanceOf: XglmError });
  t.is(err!.code, 'ERR_XGLM_CHECKSUM');

  delete hub.faults.corrupt;
  const result = await pullFiles(REPO, options);
  assertSameAsFixture(t, result.dir, WANTED);
  t.is(result.files.find((f) => f.name === 'model.safetensors')!.sha256, sha256(fixtureBytes('model.safetensors')));
});

test.serial('HF_ENDPOINT and HF_TOKEN from the environment are used when no option is given', async (t) => {
  const token = 'hf_env_token';
  const { hub, options } = await setup(t, {}, { [REPO]: { dir: FIXTURE, files: FIXTURE_FILES, token } });
  const saved = { endpoint: process.env.HF_ENDPOINT, token: process.env.HF_TOKEN };
  t.teardown(() => {
    for (const [key, value] of [['HF_ENDPOINT', saved.endpoint], ['HF_TOKEN', saved.token]] as const) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  });
  process.env.HF_ENDPOINT = `${hub.endpoint}/`;
  process.env.HF_TOKEN = token;
  const result = await pullFiles(REPO, { cacheDir: options.cacheDir, retryDelayMs: 1 });
  assertSameAsFixture(t, result.dir, WANTED);
  t.true(hub.requests.filter((r) => r.server === 'hub').every((r) => r.authorization === `Bearer ${token}`));
});

test('a corrupted LFS body fails with ERR_XGLM_CHECKSUM and leaves nothing behind; a clean retry succeeds', async (t) => {
  const { hub, options } = await setup(t, { corrupt: { file: 'model.safetensors' } });
  const err = await t.throwsAsync(pullFiles(REPO, options), { instanceOf: XglmError });
  t.is(err!.code, 'ERR_XGLM_CHECKSUM');
  t.regex(err!.message, new RegExp(sha256(fixtureBytes('model.safetensors'))));
  const dir = path.join(options.cacheDir!, 'hub', 'test-org', 'tiny-a', hub.commitOf(REPO));
  t.false(fs.existsSync(path.join(dir, 'model.safetensors')));
  t.false(fs.existsSync(path.join(dir, 'model.safetensors.incomplete')));

  delete hub.faults.corrupt;
  const result = await pullFiles(REPO, options);
  assertSameAsFixture(t, result.dir, WANTED);
});

test('abort via signal stops mid-file with ERR_XGLM_ABORTED; the next pull resumes the partial file', async (t) => {
  const stallAt = 200_000;
  const { hub, options } = await setup(t, { stall: { file: 'model.safetensors', afterBytes: stallAt } });
  const controller = new AbortController();
  const err = await t.throwsAsync(
    pullFiles(REPO, {
      ...options,
      signal: controller.signal,
      onProgress: (p) => {
        if (p.file === 'model.safetensors' && p.bytesDone === stallAt) controller.abort();
      },
    }),
    { instanceOf: XglmError },
  );
  t.is(err!.code, 'ERR_XGLM_ABORTED');
  const partial = path.join(options.cacheDir!, 'hub', 'test-org', 'tiny-a', hub.commitOf(REPO), 'model.safetensors.incomplete');
  t.is(fs.statSync(partial).size, stallAt);

  delete hub.faults.stall;
  const result = await pullFiles(REPO, options);
  assertSameAsFixture(t, result.dir, ['model.safetensors']);
  const last = hub.requests.filter((r) => r.server === 'cdn' && r.file === 'model.safetensors').at(-1)!;
  t.is(last.range, `bytes=${stallAt}-`);
});

test('an already aborted signal rejects before any request', async (t) => {
  const { hub, options } = await setup(t);
  const controller = new AbortController();
  controller.abort();
  const err = await t.throwsAsync(pullFiles(REPO, { ...options, signal: controller.signal }), { instanceOf: XglmError });
  t.is(err!.code, 'ERR_XGLM_ABORTED');
  t.is(hub.requests.length, 0);
});

test('a 503 from the API is retried', async (t) => {
  const { hub, options } = await setup(t, { failApi: { status: 503, count: 2 } });
  const result = await pullFiles(REPO, options);
  assertSameAsFixture(t, result.dir, WANTED);
  const api = hub.requests.filter((r) => r.path.startsWith('/api/'));
  t.deepEqual(
    api.map((r) => r.status),
    [503, 503, 200],
  );
});

test('retries are bounded: a hub that keeps failing ends in ERR_XGLM_HUB with its status', async (t) => {
  const { hub, options } = await setup(t, { failApi: { status: 503, count: 100 } });
  const err = await hubError(t, pullFiles(REPO, { ...options, retries: 2 }));
  t.is(err.status, 503);
  t.is(hub.requests.length, 3);
});

test('progress reports bytes per file and over the whole pull', async (t) => {
  const { options } = await setup(t);
  const events: PullProgress[] = [];
  await pullFiles(REPO, { ...options, onProgress: (p) => events.push({ ...p }) });
  const total = WANTED.reduce((sum, name) => sum + fixtureBytes(name).length, 0);
  t.true(events.every((e) => e.totalBytes === total && e.fileCount === WANTED.length));
  for (const name of WANTED) {
    const done = events.filter((e) => e.file === name && e.phase === 'done');
    t.is(done.length, 1);
    t.is(done[0]!.bytesDone, fixtureBytes(name).length);
  }
  const downloads = events.filter((e) => e.phase === 'download');
  t.true(downloads.every((e, i) => i === 0 || e.totalBytesDone >= downloads[i - 1]!.totalBytesDone));
  t.is(events.at(-1)!.totalBytesDone, total);
});

test('a repo that is not XGLM fails after config.json, before any weights are requested', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xglm-hub-bert-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const config = JSON.parse(fixtureBytes('config.json').toString('utf8')) as Record<string, unknown>;
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...config, model_type: 'bert' }));
  for (const name of ['sentencepiece.bpe.model', 'model.safetensors']) fs.copyFileSync(path.join(FIXTURE, name), path.join(dir, name));
  const { hub, options } = await setup(t, {}, { 'test-org/bert': { dir } });
  const err = await t.throwsAsync(pullFiles('test-org/bert', options), { instanceOf: XglmError });
  t.is(err!.code, 'ERR_XGLM_UNSUPPORTED');
  t.false(hub.fileRequests().some((r) => r.file === 'model.safetensors'));
});

test('invalid repo ids and revisions are refused before any request', async (t) => {
  const { hub, options } = await setup(t);
  for (const repo of ['../etc', 'a/b/c', '', 'org/na..me']) {
    const err = await t.throwsAsync(pullFiles(repo, options), { instanceOf: XglmError });
    t.is(err!.code, 'ERR_XGLM_INVALID_ARGUMENT');
  }
  const err = await t.throwsAsync(pullFiles(REPO, { ...options, revision: '../x' }), { instanceOf: XglmError });
  t.is(err!.code, 'ERR_XGLM_INVALID_ARGUMENT');
  t.is(hub.requests.length, 0);
});

test('pull with a type hands the snapshot folder to the converter and keeps the GGUF for the next pull', async (t) => {
  const { options } = await setup(t);
  const calls: { hfDir: string; outFile: string; type: string }[] = [];
  const convert = async (hfDir: string, outFile: string, { type }: { type: string }) => {
    calls.push({ hfDir, outFile, type });
    // Stand-in for the converter's output, derived from what it was given.
    fs.writeFileSync(outFile, fs.readFileSync(path.join(hfDir, 'config.json')));
  };
  const first = await pull(REPO, { ...options, type: 'Q4_K_M', convert });
  t.is(calls.length, 1);
  t.is(calls[0]!.hfDir, first.dir);
  t.is(calls[0]!.type, 'q4_k_m');
  t.true(first.converted);
  t.is(first.gguf, path.join(options.cacheDir!, 'gguf', REPO, first.commit, 'tiny-a-q4_k_m.gguf'));
  t.true(fixtureBytes('config.json').equals(fs.readFileSync(first.gguf!)));

  const second = await pull(REPO, { ...options, type: 'q4_k_m', convert });
  t.is(calls.length, 1);
  t.false(second.converted);
  t.is(second.gguf, first.gguf);

  // An explicit output file is the user's: always written, never assumed to be this model.
  const outFile = path.join(options.cacheDir!, 'mine.gguf');
  fs.writeFileSync(outFile, 'something else');
  const third = await pull(REPO, { ...options, type: 'q4_k_m', outFile, convert });
  t.is(calls.length, 2);
  t.true(third.converted);
  t.true(fixtureBytes('config.json').equals(fs.readFileSync(outFile)));
});

test('pull --type f32 through the real converter: token_embd.weight is the fixture\'s embed_tokens, byte for byte', async (t) => {
  const { options } = await setup(t);
  const progress: ConvertProgressEvent[] = [];
  const result = await pull(REPO, { ...options, type: 'f32', onConvertProgress: (e) => progress.push(e) });
  t.true(result.converted);
  t.true(progress.length > 0);
  const reader = GgufReader.open(result.gguf!);
  t.teardown(() => reader.close());
  t.is(reader.get('general.architecture'), 'xglm');
  t.is(reader.get('general.name'), 'tiny-a');

  // The oracle: the F32 tensor as stored in the fixture's model.safetensors.
  const whole = fixtureBytes('model.safetensors');
  const headerLength = Number(whole.readBigUInt64LE(0));
  const header = JSON.parse(whole.subarray(8, 8 + headerLength).toString('utf8')) as Record<string, { data_offsets: [number, number] }>;
  const [begin, end] = header['model.embed_tokens.weight']!.data_offsets;
  const embed = reader.tensor('token_embd.weight')!;
  t.true(reader.readTensorBytes(embed).equals(whole.subarray(8 + headerLength + begin, 8 + headerLength + end)));
});

test('an unknown --type is refused before anything is requested', async (t) => {
  const { hub, options } = await setup(t);
  const err = await t.throwsAsync(pull(REPO, { ...options, type: 'q4_kk' }), { instanceOf: XglmError });
  t.is(err!.code, 'ERR_XGLM_INVALID_ARGUMENT');
  t.is(hub.requests.length, 0);
});

test('a failing converter leaves no GGUF behind', async (t) => {
  const { options } = await setup(t);
  const outFile = path.join(options.cacheDir!, 'out.gguf');
  const convert = async (_hfDir: string, partial: string) => {
    fs.writeFileSync(partial, 'half a file');
    throw new XglmError('ERR_XGLM_CONVERT', 'boom');
  };
  const err = await t.throwsAsync(pull(REPO, { ...options, type: 'f16', outFile, convert }), { instanceOf: XglmError });
  t.is(err!.code, 'ERR_XGLM_CONVERT');
  t.deepEqual(fs.readdirSync(options.cacheDir!).filter((n) => n.startsWith('out.gguf')), []);
});

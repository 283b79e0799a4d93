/**
 * `xglm serve` (src/serve) driven by the real `openai` client and by plain fetch: completions
 * streaming and not (greedy text equal to `xglm generate --temp 0`), logprobs, /v1/score
 * equal to the library's numbers, every bad input's status and error body, auth, 413, 429,
 * client disconnects and shutdown. Admission, disconnect and shutdown orderings use a held
 * engine (its completions end when the test says) so no assertion depends on timing.
 */
import test from 'ava';
import OpenAI from 'openai';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { DEMO_MODEL } from '../src/cli/model-path.js';
import { loadModel } from '../src/index.js';
import { fixtureGguf, golden } from './helpers/fixtures.js';
import { Engine, type Completion, type CompletionChunk, type CompletionResult, type ServeEngine } from '../src/serve/engine.js';
import { XglmServer, type ServerOptions } from '../src/serve/server.js';

const BIN = path.join(__dirname, '..', 'bin', 'xglm.js');
const PROMPT = 'The capital of France is';

interface Running {
  url: string;
  server: XglmServer;
  logs: string[];
  client: OpenAI;
}

const servers: XglmServer[] = [];
test.after.always(async () => {
  await Promise.allSettled(servers.map((s) => s.shutdown(0)));
});

let sharedEngine: Promise<Engine> | undefined;
/** One engine on the demo model for the tests that do not shut their server down. */
function demoEngine(): Promise<Engine> {
  return (sharedEngine ??= Engine.open({ modelFile: DEMO_MODEL }));
}

/** A server on a free port, ready (unless `loaded` is false). */
async function start(options: Partial<ServerOptions> = {}, loaded = true): Promise<Running> {
  const logs: string[] = [];
  const server = new XglmServer({ engine: demoEngine(), log: (l) => logs.push(l), ...options });
  servers.push(server);
  if (loaded) await server.ready;
  const { port } = await server.listen(0, '127.0.0.1');
  const url = `http://127.0.0.1:${port}`;
  return { url, server, logs, client: new OpenAI({ baseURL: `${url}/v1`, apiKey: options.apiKey ?? 'unused', maxRetries: 0 }) };
}

interface Reply {
  status: number;
  headers: Headers;
  body: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

async function call(url: string, method: string, body?: unknown, headers: Record<string, string> = {}): Promise<Reply> {
  const res = await fetch(url, {
    method,
    headers: { 'Content-Type': 'application/json', ...headers },
    ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // SSE or empty
  }
  return { status: res.status, headers: res.headers, body: parsed };
}

/** Waits until `check` holds (no time limit of its own: ava's timeout bounds it). */
async function until(check: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await check())) await new Promise((r) => setTimeout(r, 10));
}

function assertError(t: import('ava').ExecutionContext, r: Reply, status: number, param?: string | null, code?: string): void {
  t.is(r.status, status, JSON.stringify(r.body));
  t.deepEqual(Object.keys(r.body).sort(), ['error']);
  t.deepEqual(Object.keys(r.body.error).sort(), ['code', 'message', 'param', 'type']);
  t.is(typeof r.body.error.message, 'string');
  t.true(r.body.error.message.length > 0);
  if (param !== undefined) t.is(r.body.error.param, param);
  if (code !== undefined) t.is(r.body.error.code, code);
}

// ---- the CLI: greedy equality and shutdown ---------------------------------------------------

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** `xglm serve --port 0 ...args` started; resolves once it says ready. */
async function spawnServe(args: string[]): Promise<{ url: string; child: ReturnType<typeof spawn>; exited: Promise<number | null>; stderr: () => string }> {
  const child = spawn(process.execPath, [BIN, 'serve', '--port', '0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  const url = await new Promise<string>((resolve, reject) => {
    child.stderr!.on('data', (d) => {
      stderr += d;
      const m = /ready: .* (http:\/\/127\.0\.0\.1:\d+)\/v1/.exec(stderr);
      if (m) resolve(m[1]!);
    });
    void exited.then(() => reject(new Error(`serve exited: ${stderr}`)));
  });
  return { url, child, exited, stderr: () => stderr };
}

test.serial('xglm serve: openai completions.create (streaming and not) give the greedy text of `xglm generate --temp 0`; SIGTERM exits 0', async (t) => {
  const { url, child, exited, stderr: err } = await spawnServe([]);
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 });
  const plain = await client.completions.create({ model: 'xglm-demo-q8_0', prompt: PROMPT, max_tokens: 16, temperature: 0 });
  let streamed = '';
  let finish: string | null = null;
  const stream = await client.completions.create({ model: 'xglm-demo-q8_0', prompt: PROMPT, max_tokens: 16, temperature: 0, stream: true });
  for await (const chunk of stream) {
    streamed += chunk.choices[0]!.text;
    finish = chunk.choices[0]!.finish_reason ?? finish;
  }
  child.kill('SIGTERM');
  t.is(await exited, 0, err());
  const stderr = err();
  t.regex(stderr, /stopped/);
  t.regex(stderr, /POST \/v1\/completions 200 tokens=\d+\+16 \d+ms/);

  const cli = await runCli(['generate', '--temp', '0', '-n', '16', '--json', PROMPT]);
  t.is(cli.code, 0, cli.stderr);
  const expected = JSON.parse(cli.stdout).text;
  t.true(expected.length > 0);
  t.is(plain.choices[0]!.text, expected);
  t.is(streamed, expected);
  t.is(plain.choices[0]!.finish_reason, 'length');
  t.is(finish, 'length');
  t.is(plain.object, 'text_completion');
  t.is(plain.model, 'xglm-demo-q8_0');
  t.is(plain.usage!.completion_tokens, 16);
  t.is(plain.usage!.total_tokens, plain.usage!.prompt_tokens + 16);
});

test.serial('xglm serve --quiet: no access log; SIGINT exits 0', async (t) => {
  const { url, child, exited, stderr } = await spawnServe(['--quiet']);
  t.is((await call(`${url}/v1/completions`, 'POST', { prompt: 'x', max_tokens: 2 })).status, 200);
  child.kill('SIGINT');
  t.is(await exited, 0, stderr());
  t.notRegex(stderr(), /POST \/v1\/completions/);
  t.regex(stderr(), /SIGINT: stopping/);
});

test.serial('xglm serve --help names the endpoints and flags', async (t) => {
  const r = await runCli(['serve', '--help']);
  t.is(r.code, 0);
  for (const s of ['/v1/completions', '/v1/score', '/health', '--parallel', '--api-key', '--host', '--port', '--quiet', '127.0.0.1']) t.true(r.stdout.includes(s), s);
});

// ---- completions -----------------------------------------------------------------------------

test.serial('streams end with data: [DONE]; include_usage adds a usage chunk with no choices', async (t) => {
  const { url } = await start();
  const r = await call(`${url}/v1/completions`, 'POST', { prompt: PROMPT, max_tokens: 5, temperature: 0, stream: true, stream_options: { include_usage: true } });
  t.is(r.status, 200);
  t.regex(r.headers.get('content-type')!, /^text\/event-stream/);
  const events = (r.body as string).split('\n\n').filter(Boolean);
  t.is(events.at(-1), 'data: [DONE]');
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e.replace(/^data: /, '')));
  const usage = chunks.at(-1);
  t.deepEqual(usage.choices, []);
  t.is(usage.usage.completion_tokens, 5);
  t.is(chunks.at(-2).choices[0].finish_reason, 'length');
  t.true(chunks.slice(0, -1).every((c) => c.usage === null && c.id === usage.id));
});

test.serial('n and an array of prompts: one choice each, indexed prompt-major; a seed makes sampling repeatable', async (t) => {
  const { client } = await start();
  const a = await client.completions.create({ model: 'xglm-demo-q8_0', prompt: ['Hello', 'Bonjour'], n: 2, max_tokens: 6, temperature: 1, seed: 7 });
  t.deepEqual(a.choices.map((c) => c.index), [0, 1, 2, 3]);
  const b = await client.completions.create({ model: 'xglm-demo-q8_0', prompt: ['Hello', 'Bonjour'], n: 2, max_tokens: 6, temperature: 1, seed: 7 });
  t.deepEqual(b.choices.map((c) => c.text), a.choices.map((c) => c.text));
  t.is(a.usage!.completion_tokens, 24);
  // token ids as the prompt: the same text as the string
  const ids = (await demoEngine()).tokenize(PROMPT);
  const s = await client.completions.create({ model: 'xglm-demo-q8_0', prompt: PROMPT, max_tokens: 6, temperature: 0 });
  const i = await client.completions.create({ model: 'xglm-demo-q8_0', prompt: ids, max_tokens: 6, temperature: 0 });
  t.is(i.choices[0]!.text, s.choices[0]!.text);
});

test.serial('stop ends the text before the stop string with finish_reason stop; echo prepends the prompt', async (t) => {
  const { client } = await start();
  const full = (await client.completions.create({ model: 'xglm-demo-q8_0', prompt: 'Once upon a time', max_tokens: 24, temperature: 0 })).choices[0]!.text;
  const at = [...full].findIndex((ch, k) => k > 0 && ch.trim() !== '');
  const stop = [...full][at]!;
  const r = await client.completions.create({ model: 'xglm-demo-q8_0', prompt: 'Once upon a time', max_tokens: 24, temperature: 0, stop: [stop] });
  t.is(r.choices[0]!.text, full.slice(0, full.indexOf(stop)));
  t.is(r.choices[0]!.finish_reason, 'stop');
  const e = await client.completions.create({ model: 'xglm-demo-q8_0', prompt: 'Once upon a time', max_tokens: 24, temperature: 0, echo: true });
  t.is(e.choices[0]!.text, 'Once upon a time' + full);
});

test.serial('logprobs: the top-k per generated token as OpenAI defines it, equal to the library log-probabilities', async (t) => {
  const { client } = await start();
  const r = await client.completions.create({ model: 'xglm-demo-q8_0', prompt: PROMPT, max_tokens: 6, temperature: 0, logprobs: 3 });
  const lp = r.choices[0]!.logprobs!;
  t.is(lp.tokens!.length, 6);
  t.is(lp.token_logprobs!.length, 6);
  t.is(lp.text_offset![0], PROMPT.length);
  lp.top_logprobs!.forEach((top, i) => {
    const entries = Object.entries(top);
    t.true(entries.length >= 1 && entries.length <= 4);
    t.is(top[lp.tokens![i]!], lp.token_logprobs![i]);
    // greedy: the chosen token is the most likely one
    t.is(Math.max(...entries.map(([, v]) => v)), lp.token_logprobs![i]);
  });
  // the same numbers as XglmContext.logprobs of prompt + completion
  const model = await loadModel(DEMO_MODEL);
  try {
    const ctx = await model.createContext();
    const plain = await client.completions.create({ model: 'xglm-demo-q8_0', prompt: PROMPT, max_tokens: 6, temperature: 0 });
    t.is(plain.choices[0]!.text, r.choices[0]!.text);
    const promptIds = model.tokenize(PROMPT);
    const gen = await ctx.generate(promptIds, { maxTokens: 6, temperature: 0 });
    const ref = await ctx.logprobs([...promptIds, ...gen.tokens], { top: 3 });
    t.deepEqual(lp.token_logprobs, ref.logprobs.slice(promptIds.length - 1));
  } finally {
    await model.dispose();
  }
  // echo: the prompt's tokens (after </s>) come first, offsets from the start of the prompt
  const e = await client.completions.create({ model: 'xglm-demo-q8_0', prompt: PROMPT, max_tokens: 6, temperature: 0, logprobs: 3, echo: true });
  const elp = e.choices[0]!.logprobs!;
  const promptTokens = (await demoEngine()).tokenize(PROMPT).length - 1;
  t.is(elp.tokens!.length, promptTokens + 6);
  t.is(elp.text_offset![0], 0);
  t.deepEqual(elp.token_logprobs!.slice(promptTokens), lp.token_logprobs);
  t.is(e.choices[0]!.text, PROMPT + r.choices[0]!.text);
  // streamed: the same logprobs
  const stream = await client.completions.create({ model: 'xglm-demo-q8_0', prompt: PROMPT, max_tokens: 6, temperature: 0, logprobs: 3, stream: true });
  const tokens: number[] = [];
  for await (const c of stream) if (c.choices[0]?.logprobs) tokens.push(...c.choices[0].logprobs.token_logprobs!);
  t.deepEqual(tokens, lp.token_logprobs);
});

test.serial('max_tokens is capped by the context: generation stops at the last position with finish_reason length', async (t) => {
  const { client } = await start();
  const ids = (await demoEngine()).tokenize(PROMPT);
  // </s> banned: nothing ends the text before the context does
  const r = await client.completions.create({ model: 'xglm-demo-q8_0', prompt: PROMPT, max_tokens: 100000, temperature: 0, logit_bias: { '2': -100 } });
  t.is(r.usage!.completion_tokens, 512 - ids.length);
  t.is(r.choices[0]!.finish_reason, 'length');
});

// ---- score, models, health -------------------------------------------------------------------

test.serial('/v1/score: the numbers of scoreContinuations and score', async (t) => {
  const { url } = await start();
  const model = await loadModel(DEMO_MODEL);
  try {
    const ctx = await model.createContext();
    const prefix = 'I wanted to conserve energy.';
    const continuations = [' I swept the floor.', ' I shut off the light.'];
    const c = await call(`${url}/v1/score`, 'POST', { model: 'xglm-demo-q8_0', prefix, continuations });
    t.is(c.status, 200);
    const refC = await ctx.scoreContinuations(prefix, continuations);
    t.deepEqual(
      c.body.data,
      refC.map((s, index) => ({ index, logprob: s.logprob, tokens: s.tokens, continuation_logprob: s.continuationLogprob, prefix_tokens: s.prefixTokens })),
    );
    const texts = continuations.map((x) => prefix + x);
    const s = await call(`${url}/v1/score`, 'POST', { texts });
    t.is(s.status, 200);
    const refS = await ctx.score(texts);
    t.deepEqual(s.body.data, refS.map((r, index) => ({ index, logprob: r.logprob, tokens: r.tokens })));
    t.is(s.body.usage.prompt_tokens, refS[0]!.tokens + refS[1]!.tokens);
  } finally {
    await model.dispose();
  }
});

test.serial('/v1/models lists the served model; /health reports ready and idle counters', async (t) => {
  const { url, client } = await start();
  const models = await client.models.list();
  t.deepEqual(models.data.map((m) => m.id), ['xglm-demo-q8_0']);
  t.is((await client.models.retrieve('xglm-demo-q8_0')).id, 'xglm-demo-q8_0');
  const h = await call(`${url}/health`, 'GET');
  t.is(h.status, 200);
  t.is(h.body.status, 'ready');
  t.is(h.body.contextSize, 512);
  t.is(h.body.requests.running, 0);
  t.is(h.body.requests.queued, 0);
});

test.serial('/health says loading (503) until the model is loaded, and /v1 answers 503', async (t) => {
  let finish: (e: ServeEngine) => void = () => undefined;
  const { url } = await start({ engine: new Promise<ServeEngine>((r) => (finish = r)) }, false);
  const h = await call(`${url}/health`, 'GET');
  t.is(h.status, 503);
  t.is(h.body.status, 'loading');
  assertError(t, await call(`${url}/v1/completions`, 'POST', { prompt: 'x' }), 503, null, 'model_loading');
  finish(await demoEngine());
  await until(async () => (await call(`${url}/health`, 'GET')).status === 200);
  t.pass();
});

// ---- bad input -------------------------------------------------------------------------------

test.serial('every bad input gets 400 (or its status) and an OpenAI-shaped error body', async (t) => {
  const { url, client } = await start();
  const cases: Array<[unknown, string | null, string?]> = [
    ['{not json', null, 'invalid_json'],
    ['[1,2]', null, 'invalid_json'],
    [{}, 'prompt', 'missing_required_parameter'],
    [{ prompt: 42 }, 'prompt', 'invalid_type'],
    [{ prompt: [] }, 'prompt'],
    [{ prompt: ['a', 1] }, 'prompt', 'invalid_type'],
    [{ prompt: [2, 999999] }, 'prompt'],
    [{ prompt: 'word '.repeat(600) }, 'prompt', 'context_length_exceeded'],
    [{ prompt: 'x', max_tokens: -1 }, 'max_tokens'],
    [{ prompt: 'x', max_tokens: '5' }, 'max_tokens', 'invalid_type'],
    [{ prompt: 'x', max_tokens: 1.5 }, 'max_tokens', 'invalid_type'],
    [{ prompt: 'x', temperature: 3 }, 'temperature'],
    [{ prompt: 'x', temperature: 'hot' }, 'temperature', 'invalid_type'],
    [{ prompt: 'x', top_p: 1.5 }, 'top_p'],
    [{ prompt: 'x', n: 0 }, 'n'],
    [{ prompt: 'x', n: 17 }, 'n'],
    [{ prompt: Array(10).fill('x'), n: 10 }, 'n'],
    [{ prompt: 'x', stop: ['a', 'b', 'c', 'd', 'e'] }, 'stop'],
    [{ prompt: 'x', stop: 5 }, 'stop', 'invalid_type'],
    [{ prompt: 'x', stop: [''] }, 'stop'],
    [{ prompt: 'x', logprobs: 6 }, 'logprobs'],
    [{ prompt: 'x', seed: -1 }, 'seed'],
    [{ prompt: 'x', seed: 0.5 }, 'seed', 'invalid_type'],
    [{ prompt: 'x', stream: 'yes' }, 'stream', 'invalid_type'],
    [{ prompt: 'x', stream_options: { include_usage: true } }, 'stream_options'],
    [{ prompt: 'x', presence_penalty: 3 }, 'presence_penalty'],
    [{ prompt: 'x', logit_bias: { abc: 1 } }, 'logit_bias'],
    [{ prompt: 'x', logit_bias: { '5': 101 } }, 'logit_bias'],
    [{ prompt: 'x', suffix: 'end' }, 'suffix', 'unsupported_parameter'],
    [{ prompt: 'x', best_of: 3 }, 'best_of', 'unsupported_parameter'],
    [{ prompt: 'x', model: 'gpt-4' }, 'model', 'model_not_found'],
    [{ prompt: 'x', model: DEMO_MODEL }, 'model', 'model_not_found'],
    [{ prompt: 'x', model: '../../etc/passwd' }, 'model', 'model_not_found'],
    [{ prompt: 'x', model: 7 }, 'model', 'invalid_type'],
  ];
  for (const [body, param, code] of cases) {
    const r = await call(`${url}/v1/completions`, 'POST', body);
    assertError(t, r, 400, param, code);
  }
  const scoreCases: Array<[unknown, string | null, string?]> = [
    [{}, 'texts', 'missing_required_parameter'],
    [{ texts: 'a' }, 'texts', 'invalid_type'],
    [{ texts: [] }, 'texts'],
    [{ texts: ['a'], prefix: 'b', continuations: ['c'] }, 'texts'],
    [{ continuations: ['a'] }, 'prefix', 'missing_required_parameter'],
    [{ prefix: 1, continuations: ['a'] }, 'prefix', 'invalid_type'],
    [{ prefix: 'a', continuations: [] }, 'continuations'],
    [{ texts: ['word '.repeat(600)] }, null, 'context_length_exceeded'],
    [{ texts: ['a'], model: 'other' }, 'model', 'model_not_found'],
  ];
  for (const [body, param, code] of scoreCases) assertError(t, await call(`${url}/v1/score`, 'POST', body), 400, param, code);
  assertError(t, await call(`${url}/v1/nothing`, 'GET'), 404, null, 'not_found');
  const m = await call(`${url}/v1/completions`, 'GET');
  assertError(t, m, 405, null, 'method_not_allowed');
  t.is(m.headers.get('allow'), 'POST');
  // the openai client surfaces them as its typed errors
  const err = await t.throwsAsync(client.completions.create({ model: 'gpt-4', prompt: 'x' }));
  t.true(err instanceof OpenAI.BadRequestError);
  t.is((err as InstanceType<typeof OpenAI.BadRequestError>).status, 400);
  t.is((err as InstanceType<typeof OpenAI.BadRequestError>).code, 'model_not_found');
  // the server still works
  const ok = await client.completions.create({ model: 'xglm-demo-q8_0', prompt: 'x', max_tokens: 2 });
  t.is(ok.choices.length, 1);
});

test.serial('--api-key: 401 without the right Bearer token, on every endpoint', async (t) => {
  const { url, client } = await start({ apiKey: 'sekret' });
  for (const [method, p] of [['GET', '/health'], ['GET', '/v1/models'], ['POST', '/v1/completions'], ['POST', '/v1/score']] as const) {
    const r = await call(`${url}${p}`, method, method === 'POST' ? { prompt: 'x' } : undefined);
    assertError(t, r, 401, null, 'invalid_api_key');
    t.is(r.headers.get('www-authenticate'), 'Bearer');
    assertError(t, await call(`${url}${p}`, method, method === 'POST' ? { prompt: 'x' } : undefined, { Authorization: 'Bearer wrong' }), 401);
  }
  t.is((await call(`${url}/health`, 'GET', undefined, { Authorization: 'Bearer sekret' })).status, 200);
  const r = await client.completions.create({ model: 'xglm-demo-q8_0', prompt: 'x', max_tokens: 2 });
  t.is(r.choices.length, 1);
  const bad = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'wrong', maxRetries: 0 });
  await t.throwsAsync(bad.completions.create({ model: 'xglm-demo-q8_0', prompt: 'x' }), { instanceOf: OpenAI.AuthenticationError });
});

test.serial('a body over the limit gets 413, which the client reads even while it is still sending', async (t) => {
  const limit = 256 << 10;
  const { url } = await start({ maxBodyBytes: limit });
  // several megabytes: more than the sockets buffer, so the server must read them to answer cleanly
  for (let i = 0; i < 3; i++) assertError(t, await call(`${url}/v1/completions`, 'POST', { prompt: 'x'.repeat(15 * limit) }), 413, null, 'request_too_large');
  // chunked, without Content-Length
  const body = new ReadableStream({
    start(c) {
      for (let i = 0; i < 512; i++) c.enqueue(new TextEncoder().encode(' '.repeat(1024)));
      c.close();
    },
  });
  const res = await fetch(`${url}/v1/score`, { method: 'POST', body, duplex: 'half' } as RequestInit);
  t.is(res.status, 413);
  t.is(((await res.json()) as { error: { code: string } }).error.code, 'request_too_large');
  const ok = await call(`${url}/v1/completions`, 'POST', { prompt: 'x', max_tokens: 1 });
  t.is(ok.status, 200);
});

// ---- admission, disconnects, shutdown (a held engine: completions end when the test says) -----

interface Held {
  signal: AbortSignal;
  release(): void;
}

/** The demo engine, but each completion sends one chunk and then waits for release() or its abort. */
function heldEngine(real: Engine): ServeEngine & { held: Held[]; started: () => Promise<Held> } {
  const held: Held[] = [];
  let waiters: Array<(h: Held) => void> = [];
  let seen = 0;
  return {
    modelId: real.modelId,
    contextSize: real.contextSize,
    vocabSize: real.vocabSize,
    tokenize: (s) => real.tokenize(s),
    detokenize: (ids) => real.detokenize(ids),
    score: (texts, signal) => real.score(texts, signal),
    scoreContinuations: (p, c, signal) => real.scoreContinuations(p, c, signal),
    close: async () => undefined,
    stats: () => ({ active: held.length, completions: seen, aborted: 0 }),
    held,
    started: () => new Promise((r) => waiters.push(r)),
    complete(req, signal): Completion {
      seen++;
      let release: () => void = () => undefined;
      const done = new Promise<void>((r) => (release = r));
      const h: Held = { signal, release };
      held.push(h);
      const ended = new Promise<'released' | 'aborted'>((resolve) => {
        void done.then(() => resolve('released'));
        signal.addEventListener('abort', () => resolve('aborted'), { once: true });
      });
      const result: Promise<CompletionResult> = ended.then((how) => {
        held.splice(held.indexOf(h), 1);
        return { text: 'a', finishReason: how === 'aborted' ? 'abort' : 'length', promptTokens: 1, completionTokens: 1 };
      });
      const ws = waiters;
      waiters = [];
      ws.forEach((w) => w(h));
      return {
        result,
        async *[Symbol.asyncIterator](): AsyncIterator<CompletionChunk> {
          yield { text: 'a', tokens: [5] };
          await result;
        },
      };
    },
  };
}

/** Reads an SSE response until its first event. */
async function firstEvent(res: Response): Promise<ReadableStreamDefaultReader<Uint8Array>> {
  const reader = res.body!.getReader();
  let text = '';
  while (!text.includes('\n\n')) {
    const { value, done } = await reader.read();
    if (done) break;
    text += new TextDecoder().decode(value);
  }
  return reader;
}

async function readAll(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<string> {
  let text = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return text;
    text += new TextDecoder().decode(value);
  }
}

/** A server on a held engine with one stream running: its held completion, and a reader past the first event. */
async function heldStream(options: Partial<ServerOptions>, body: object = { prompt: 'a', stream: true }, signal?: AbortSignal) {
  const engine = heldEngine(await demoEngine());
  const running = await start({ engine, ...options });
  const started = engine.started();
  const res = await fetch(`${running.url}/v1/completions`, { method: 'POST', body: JSON.stringify(body), ...(signal ? { signal } : {}) });
  const held = await started;
  const reader = await firstEvent(res);
  return { ...running, engine, held, reader };
}

test.serial('beyond --parallel requests queue; beyond the queue 429 with Retry-After; a client leaving the queue frees its place', async (t) => {
  const { url, server, engine, held: h1, reader } = await heldStream({ parallel: 1, queue: 1 });
  const queuedAbort = new AbortController();
  const second = fetch(`${url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: 'b' }), signal: queuedAbort.signal });
  second.catch(() => undefined);
  await until(() => server.health().requests.queued === 1);
  const third = await call(`${url}/v1/completions`, 'POST', { prompt: 'c' });
  assertError(t, third, 429, null, 'rate_limit_exceeded');
  t.is(third.headers.get('retry-after'), '1');
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'x', maxRetries: 0 });
  await t.throwsAsync(client.completions.create({ model: 'xglm-demo-q8_0', prompt: 'd' }), { instanceOf: OpenAI.RateLimitError });
  // the queued client gives up: it leaves the queue and never runs
  queuedAbort.abort();
  await until(() => server.health().requests.queued === 0);
  t.is(engine.stats().completions, 1);
  h1.release();
  const rest = await readAll(reader);
  t.true(rest.endsWith('data: [DONE]\n\n'));
  await until(() => server.health().requests.running === 0);
});

test.serial('a client that disconnects mid-stream aborts its generation at once and frees its slot (access log 499)', async (t) => {
  const abort = new AbortController();
  const { url, server, logs, engine, held: h } = await heldStream({ parallel: 1, queue: 0 }, { prompt: 'a', stream: true, max_tokens: 100 }, abort.signal);
  t.false(h.signal.aborted);
  abort.abort();
  await until(() => h.signal.aborted);
  await until(() => server.health().requests.running === 0);
  await until(() => logs.some((l) => / POST \/v1\/completions 499 /.test(l)));
  t.is(engine.held.length, 0);
  // non-streaming too
  const started2 = engine.started();
  const abort2 = new AbortController();
  const p = fetch(`${url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: 'a' }), signal: abort2.signal });
  p.catch(() => undefined);
  const h2 = await started2;
  abort2.abort();
  await until(() => h2.signal.aborted);
  await until(() => server.health().requests.running === 0);
});

test.serial('a real generation aborted mid-stream ends with finish reason abort and leaves nothing running', async (t) => {
  const engine = await demoEngine();
  const before = engine.stats();
  const controller = new AbortController();
  const c = engine.complete(
    { prompt: PROMPT, maxTokens: 400, temperature: 0, topP: 1, topK: 0, minP: 0, presencePenalty: 0, frequencyPenalty: 0, logitBias: { 2: -100 }, stop: [] },
    controller.signal,
  );
  for await (const chunk of c) {
    t.true(chunk.tokens.length > 0);
    controller.abort();
  }
  const r = await c.result;
  t.is(r.finishReason, 'abort');
  t.true(r.completionTokens < 400);
  const after = engine.stats();
  t.is(after.active, 0);
  t.is(after.aborted, before.aborted + 1);
  // over HTTP: the server's counters come back to idle after a client leaves mid-stream
  const { url, server } = await start();
  const abort = new AbortController();
  const res = await fetch(`${url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: PROMPT, stream: true, max_tokens: 400, logit_bias: { '2': -100 } }), signal: abort.signal });
  await firstEvent(res);
  abort.abort();
  await until(() => server.health().requests.running === 0 && engine.stats().active === 0);
  t.pass();
});

test.serial('shutdown: stops accepting, lets a running stream finish, refuses queued requests with 503, then resolves', async (t) => {
  const { url, server, held: h, reader } = await heldStream({ parallel: 1, queue: 4 });
  const queued = call(`${url}/v1/completions`, 'POST', { prompt: 'b' });
  await until(() => server.health().requests.queued === 1);
  let done = false;
  const shut = server.shutdown(60_000).then(() => (done = true));
  assertError(t, await queued, 503, null, 'shutting_down');
  t.false(done);
  t.false(h.signal.aborted);
  await t.throwsAsync(fetch(`${url}/health`)); // no new connections
  h.release();
  t.true((await readAll(reader)).endsWith('data: [DONE]\n\n'));
  await shut;
  t.true(done);
});

test.serial('shutdown past its grace aborts running streams: they end with an error event and [DONE]', async (t) => {
  const { server, held: h, reader } = await heldStream({});
  await server.shutdown(0);
  t.true(h.signal.aborted);
  const rest = await readAll(reader);
  t.regex(rest, /"code":"shutting_down"/);
  t.true(rest.endsWith('data: [DONE]\n\n'));
});

test.serial('on a fixture model (F32 KV): the greedy completion is the PyTorch greedy continuation', async (t) => {
  const g = golden('tiny-b');
  const p = g.prompts[1]!;
  const n = p.greedy.eos_index ?? p.greedy.ids.length;
  const file = await fixtureGguf('tiny-b');
  const engine = await Engine.open({ modelFile: file, kvType: 'f32' });
  const { client, server } = await start({ engine });
  const r = await client.completions.create({ model: 'tiny-b-f32', prompt: p.text, max_tokens: n, temperature: 0, logprobs: 1 });
  t.is(r.model, engine.modelId);
  t.is(r.usage!.completion_tokens, n);
  t.deepEqual(r.choices[0]!.logprobs!.tokens, p.greedy.ids.slice(0, n).map((id) => engine.tokenText(id)));
  const model = await loadModel(file);
  try {
    const ctx = await model.createContext({ kvType: 'f32' });
    t.is(r.choices[0]!.text, (await ctx.generate(p.text, { maxTokens: n, temperature: 0 })).text);
  } finally {
    await model.dispose();
    await server.shutdown(0);
  }
});

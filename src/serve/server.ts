/**
 * `xglm serve`'s HTTP server (node:http): OpenAI's completions API, /v1/models, /health and
 * our /v1/score, over one Engine (engine.ts, the only code that calls the library).
 *
 * Admission: at most `parallel` requests run; up to `queue` more wait in arrival order;
 * beyond that a request gets 429 with Retry-After. A client that goes away aborts its
 * work (a queued request leaves the queue). Shutdown stops accepting, lets running requests
 * finish for a grace period, then aborts them.
 */
import { randomUUID, createHash, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Completion, CompletionResult, ServeEngine as Engine } from './engine.js';
import { ApiError, apiErrorOf, checkModel, logprobsObject, parseBody, parseCompletions, parseScore, type CompletionsRequest } from './protocol.js';

export interface ServerOptions {
  /** The engine, or its loading (the server answers 503 'loading' until it resolves). */
  engine: Engine | Promise<Engine>;
  /** Requests running at once. @default 4 */
  parallel?: number;
  /** Requests waiting beyond `parallel` before 429. @default 64 */
  queue?: number;
  /** Require `Authorization: Bearer <apiKey>` on every request. */
  apiKey?: string;
  /** Request bodies larger than this get 413. @default 1 MiB */
  maxBodyBytes?: number;
  /** One line per request (method, path, status, tokens, ms); omit for none. */
  log?: (line: string) => void;
}

export interface HealthReport {
  status: 'loading' | 'ready' | 'draining' | 'failed';
  model: string | null;
  contextSize: number | null;
  requests: { running: number; queued: number; parallel: number; queueLimit: number; total: number };
  /** Calls into the model not yet settled (0 when idle: nothing leaked), completions and aborted ones so far. */
  engine: { active: number; completions: number; aborted: number } | null;
  rssBytes: number;
}

interface Slot {
  release(): void;
}

/** At most `parallel` holders; `queue` more wait in order; beyond that, null. */
class Admission {
  running = 0;
  private readonly waiting: Array<{ grant: () => void; cancelled: boolean }> = [];

  constructor(
    readonly parallel: number,
    readonly queueLimit: number,
  ) {}

  get queued(): number {
    return this.waiting.length;
  }

  /** A slot now, a promise of one, or null when the queue is full. The promise rejects when `signal` aborts first. */
  acquire(signal: AbortSignal): Promise<Slot> | null {
    if (this.running < this.parallel) {
      this.running++;
      return Promise.resolve(this.slot());
    }
    if (this.waiting.length >= this.queueLimit) return null;
    return new Promise((resolve, reject) => {
      const entry = {
        cancelled: false,
        grant: () => {
          signal.removeEventListener('abort', onAbort);
          resolve(this.slot());
        },
      };
      const onAbort = () => {
        const i = this.waiting.indexOf(entry);
        if (i >= 0) this.waiting.splice(i, 1);
        reject(signal.reason);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.waiting.push(entry);
    });
  }

  private slot(): Slot {
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        const next = this.waiting.shift();
        if (next) next.grant();
        else this.running--;
      },
    };
  }
}

/** The state of one request: its abort, and what the access log reports. */
interface Exchange {
  req: http.IncomingMessage;
  res: http.ServerResponse;
  path: string;
  abort: AbortController;
  promptTokens: number;
  completionTokens: number;
  /** Waiting for a slot. */
  queued: boolean;
}

const SSE_HEADERS = {
  'Content-Type': 'text/event-stream; charset=utf-8',
  'Cache-Control': 'no-cache',
  Connection: 'keep-alive',
  // nginx: do not buffer the stream
  'X-Accel-Buffering': 'no',
};

/** Over-limit bodies up to this many times the limit are drained so that the client reads its 413. */
const DRAIN_FACTOR = 16;

const shuttingDown = () => new ApiError(503, 'the server is shutting down', 'server_error', null, 'shutting_down', { Connection: 'close' });

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

export class XglmServer {
  readonly http: http.Server;
  private engine: Engine | undefined;
  private loadError: unknown;
  private readonly admission: Admission;
  private readonly apiKeyHash: Buffer | undefined;
  private readonly maxBodyBytes: number;
  private readonly log: ((line: string) => void) | undefined;
  private readonly exchanges = new Set<Exchange>();
  private draining = false;
  private total = 0;
  /** Resolves with the engine once loaded (rejects when loading fails). */
  readonly ready: Promise<Engine>;

  constructor(options: ServerOptions) {
    this.admission = new Admission(options.parallel ?? 4, options.queue ?? 64);
    this.apiKeyHash = options.apiKey !== undefined ? sha256(options.apiKey) : undefined;
    this.maxBodyBytes = options.maxBodyBytes ?? 1 << 20;
    this.log = options.log;
    this.ready = Promise.resolve(options.engine).then(
      (e) => (this.engine = e),
      (err: unknown) => {
        this.loadError = err;
        throw err;
      },
    );
    this.ready.catch(() => undefined);
    this.http = http.createServer((req, res) => this.handle(req, res));
  }

  /** Listens; resolves with the bound address. */
  listen(port: number, host: string): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.http.once('error', reject);
      this.http.listen(port, host, () => {
        this.http.off('error', reject);
        resolve(this.http.address() as AddressInfo);
      });
    });
  }

  health(): HealthReport {
    const e = this.engine;
    return {
      status: this.draining ? 'draining' : this.loadError !== undefined ? 'failed' : e ? 'ready' : 'loading',
      model: e?.modelId ?? null,
      contextSize: e?.contextSize ?? null,
      requests: { running: this.admission.running, queued: this.admission.queued, parallel: this.admission.parallel, queueLimit: this.admission.queueLimit, total: this.total },
      engine: e ? e.stats() : null,
      rssBytes: process.memoryUsage.rss(),
    };
  }

  /**
   * Graceful shutdown: no new connections or requests (503), queued requests leave; running
   * ones may finish within `graceMs`, then they are aborted; then the model is freed.
   */
  async shutdown(graceMs = 10_000): Promise<void> {
    if (!this.draining) {
      this.draining = true;
      this.http.close();
      this.http.closeIdleConnections();
      for (const x of this.exchanges) if (x.queued) x.abort.abort(shuttingDown());
    }
    const settled = () => Promise.allSettled([...this.exchanges].map((x) => new Promise((r) => (x.res.writableEnded || x.res.destroyed ? r(0) : x.res.once('close', r)))));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([settled(), new Promise((r) => (timer = setTimeout(r, graceMs)))]);
    clearTimeout(timer);
    for (const x of this.exchanges) x.abort.abort(shuttingDown());
    await settled();
    this.http.closeAllConnections();
    const engine = await this.ready.catch(() => undefined);
    await engine?.close();
  }

  // ---- requests ------------------------------------------------------------------------------

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const t0 = performance.now();
    const path = (req.url ?? '/').split('?')[0]!.replace(/\/+$/, '') || '/';
    const x: Exchange = { req, res, path, abort: new AbortController(), promptTokens: 0, completionTokens: 0, queued: false };
    this.exchanges.add(x);
    this.total++;
    res.on('close', () => {
      this.exchanges.delete(x);
      // the client went away before the response ended: stop its work now
      const gone = !res.writableFinished;
      if (gone) x.abort.abort(new ApiError(499, 'the client closed the connection'));
      if (this.log) {
        const tokens = x.promptTokens || x.completionTokens ? `${x.promptTokens}+${x.completionTokens}` : '-';
        this.log(`${new Date().toISOString()} ${req.method} ${path} ${gone ? 499 : res.statusCode} tokens=${tokens} ${Math.round(performance.now() - t0)}ms`);
      }
    });
    this.route(x).catch((err: unknown) => this.fail(x, apiErrorOf(err)));
  }

  private async route(x: Exchange): Promise<void> {
    const { req, path } = x;
    if (this.draining) throw shuttingDown();
    this.authorize(req);
    const method = req.method ?? 'GET';
    const only = (allowed: string) => {
      if (method !== allowed) throw new ApiError(405, `${method} is not allowed on ${path}`, 'invalid_request_error', null, 'method_not_allowed', { Allow: allowed });
    };
    switch (path) {
      case '/health':
        only('GET');
        return this.sendHealth(x);
      case '/v1/models':
        only('GET');
        return this.send(x, 200, { object: 'list', data: [this.modelObject(this.loaded())] });
      case '/v1/completions':
        only('POST');
        return this.admitted(x, (engine, body) => this.completions(x, engine, body));
      case '/v1/score':
        only('POST');
        return this.admitted(x, (engine, body) => this.score(x, engine, body));
    }
    if (path.startsWith('/v1/models/')) {
      only('GET');
      const engine = this.loaded();
      if (decodeURIComponent(path.slice('/v1/models/'.length)) !== engine.modelId) throw new ApiError(404, 'no such model', 'not_found_error', 'model', 'model_not_found');
      return this.send(x, 200, this.modelObject(engine));
    }
    throw new ApiError(404, `no route ${method} ${path}`, 'not_found_error', null, 'not_found');
  }

  private authorize(req: http.IncomingMessage): void {
    if (!this.apiKeyHash) return;
    const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '');
    if (m && timingSafeEqual(sha256(m[1]!.trim()), this.apiKeyHash)) return;
    throw new ApiError(401, 'missing or incorrect API key: send Authorization: Bearer <key>', 'authentication_error', null, 'invalid_api_key', { 'WWW-Authenticate': 'Bearer' });
  }

  private loaded(): Engine {
    if (this.engine) return this.engine;
    if (this.loadError !== undefined) throw new ApiError(503, 'the model failed to load', 'server_error', null, 'model_load_failed');
    throw new ApiError(503, 'the model is loading', 'server_error', null, 'model_loading', { 'Retry-After': '1' });
  }

  private modelObject(engine: Engine) {
    return { id: engine.modelId, object: 'model', created: 0, owned_by: 'xglm-node' };
  }

  private sendHealth(x: Exchange): void {
    const h = this.health();
    this.send(x, h.status === 'ready' ? 200 : 503, h);
  }

  /** Reads the body, waits for a slot (or 429), runs `fn`, frees the slot. */
  private async admitted(x: Exchange, fn: (engine: Engine, body: Record<string, unknown>) => Promise<void>): Promise<void> {
    const engine = this.loaded();
    const body = parseBody(await this.readBody(x));
    checkModel(body, engine.modelId);
    const pending = this.admission.acquire(x.abort.signal);
    if (!pending) {
      throw new ApiError(429, `the server is busy: ${this.admission.running} requests running and ${this.admission.queued} queued; retry later`, 'rate_limit_error', null, 'rate_limit_exceeded', {
        'Retry-After': '1',
      });
    }
    x.queued = true;
    // rejects with the abort's reason when the client leaves (499: nobody to answer) or the server stops (503)
    const slot = await pending;
    x.queued = false;
    try {
      if (this.draining) throw shuttingDown();
      await fn(engine, body);
    } finally {
      slot.release();
    }
  }

  /**
   * The body, at most maxBodyBytes; more is a 413. A body up to DRAIN_FACTOR times the limit is
   * read to its end and dropped, so the client can finish sending and read the 413 (closing on
   * it mid-upload would give it EPIPE instead); a larger one closes the connection.
   */
  private readBody(x: Exchange): Promise<Buffer> {
    const { req } = x;
    const limit = this.maxBodyBytes;
    const drainLimit = DRAIN_FACTOR * limit;
    const tooLarge = (close: boolean) =>
      new ApiError(413, `the request body is larger than ${limit} bytes`, 'invalid_request_error', null, 'request_too_large', close ? { Connection: 'close' } : {});
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > limit) {
      req.resume();
      return Promise.reject(tooLarge(declared > drainLimit));
    }
    return new Promise((resolve, reject) => {
      const parts: Buffer[] = [];
      let size = 0;
      req.on('data', (d: Buffer) => {
        size += d.length;
        if (size <= limit) parts.push(d);
        else if (size - d.length <= limit) reject(tooLarge(false));
        else if (size > drainLimit) req.destroy();
      });
      req.on('end', () => resolve(Buffer.concat(parts)));
      req.on('error', reject);
      // the client left halfway through its body
      x.abort.signal.addEventListener('abort', () => reject(x.abort.signal.reason), { once: true });
    });
  }

  // ---- responses -------------------------------------------------------------------------------

  private send(x: Exchange, status: number, body: unknown, headers: Record<string, string> = {}): void {
    if (x.res.headersSent || x.res.destroyed) return;
    const data = JSON.stringify(body);
    x.res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data), ...headers });
    x.res.end(data);
  }

  private fail(x: Exchange, err: ApiError): void {
    if (err.status === 499 || x.res.destroyed) return; // nobody to tell
    if (x.res.headersSent) {
      // in a stream: an error event, then the end
      if (!x.res.writableEnded) x.res.end(`data: ${JSON.stringify(err.body())}\n\ndata: [DONE]\n\n`);
      return;
    }
    this.send(x, err.status, err.body(), err.headers);
  }

  /** One server-sent event; waits while the socket's buffer is full. */
  private async event(x: Exchange, data: string): Promise<void> {
    if (x.res.destroyed || x.res.writableEnded) return;
    if (!x.res.write(`data: ${data}\n\n`)) {
      await new Promise<void>((resolve) => {
        const done = () => {
          x.res.off('drain', done);
          x.res.off('close', done);
          resolve();
        };
        x.res.on('drain', done);
        x.res.on('close', done);
      });
    }
  }

  // ---- /v1/completions -------------------------------------------------------------------------

  private async completions(x: Exchange, engine: Engine, body: Record<string, unknown>): Promise<void> {
    const r = parseCompletions(body, engine.vocabSize);
    const ctx = engine.contextSize;
    // each prompt's ids and text, and max_tokens capped by what the context leaves
    const prompts = r.prompts.map((p, i) => {
      const ids = typeof p === 'string' ? engine.tokenize(p) : p.length ? p : [2];
      if (ids.length > ctx) {
        throw new ApiError(400, `prompt ${i} has ${ids.length} tokens, more than the context of ${ctx}`, 'invalid_request_error', 'prompt', 'context_length_exceeded');
      }
      return { ids, text: typeof p === 'string' ? p : engine.detokenize(ids), maxTokens: Math.min(r.maxTokens, ctx - ids.length) };
    });
    x.promptTokens = prompts.reduce((s, p) => s + p.ids.length, 0);
    const id = `cmpl-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    const head = { id, object: 'text_completion', created, model: engine.modelId };
    const signal = x.abort.signal;
    const runs: Array<{ prompt: (typeof prompts)[number]; completion: Completion }> = [];
    prompts.forEach((prompt) => {
      for (let j = 0; j < r.n; j++) {
        const seed = r.sampling.seed !== undefined ? r.sampling.seed + runs.length : undefined;
        const completion = engine.complete(
          { ...r.sampling, prompt: prompt.ids, maxTokens: prompt.maxTokens, ...(seed !== undefined ? { seed } : {}), ...(r.echo ? { echo: true } : {}) },
          signal,
        );
        runs.push({ prompt, completion });
      }
    });
    const usage = (results: CompletionResult[]) => {
      const completionTokens = results.reduce((s, c) => s + c.completionTokens, 0);
      x.completionTokens = completionTokens;
      return { prompt_tokens: x.promptTokens, completion_tokens: completionTokens, total_tokens: x.promptTokens + completionTokens };
    };
    const logprobsOf = (items: CompletionResult['logprobs'], offset: number) => (r.sampling.logprobs === undefined ? null : logprobsObject(items ?? [], offset));

    if (!r.stream) {
      let results: CompletionResult[];
      try {
        results = await Promise.all(runs.map((run) => run.completion.result));
      } catch (err) {
        x.abort.abort(err); // the other choices stop too
        await Promise.allSettled(runs.map((run) => run.completion.result));
        throw err;
      }
      if (signal.aborted) throw signal.reason;
      this.send(x, 200, {
        ...head,
        choices: results.map((c, index) => {
          const run = runs[index]!;
          const echo = r.echo ? run.prompt.text : '';
          return { index, text: echo + c.text, logprobs: logprobsOf(c.logprobs, r.echo ? 0 : run.prompt.text.length), finish_reason: c.finishReason };
        }),
        usage: usage(results),
      });
      return;
    }

    x.res.writeHead(200, SSE_HEADERS);
    x.res.flushHeaders();
    const chunk = (index: number, text: string, logprobs: unknown, finish: string | null) =>
      JSON.stringify({ ...head, choices: [{ index, text, logprobs, finish_reason: finish }], ...(r.includeUsage ? { usage: null } : {}) });
    let failure: unknown;
    await Promise.all(
      runs.map(async (run, index) => {
        let offset = r.echo ? 0 : run.prompt.text.length;
        try {
          if (r.echo) await this.event(x, chunk(index, run.prompt.text, null, null));
          for await (const c of run.completion) {
            if (!c.text && !c.logprobs) continue;
            await this.event(x, chunk(index, c.text, logprobsOf(c.logprobs, offset), null));
            for (const lp of c.logprobs ?? []) offset += lp.token.length;
          }
          const res = await run.completion.result;
          if (res.finishReason !== 'abort') await this.event(x, chunk(index, '', null, res.finishReason));
        } catch (err) {
          failure ??= err;
          x.abort.abort(err);
        }
      }),
    );
    const results = await Promise.allSettled(runs.map((run) => run.completion.result));
    const ok = results.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
    const u = usage(ok);
    if (failure !== undefined) throw failure;
    if (signal.aborted) throw signal.reason;
    if (r.includeUsage) await this.event(x, JSON.stringify({ ...head, choices: [], usage: u }));
    x.res.end('data: [DONE]\n\n');
  }

  // ---- /v1/score -------------------------------------------------------------------------------

  private async score(x: Exchange, engine: Engine, body: Record<string, unknown>): Promise<void> {
    const r = parseScore(body);
    const signal = x.abort.signal;
    const data =
      r.kind === 'texts'
        ? (await engine.score(r.texts, signal)).map((s, index) => ({ index, logprob: s.logprob, tokens: s.tokens }))
        : (await engine.scoreContinuations(r.prefix, r.continuations, signal)).map((s, index) => ({
            index,
            logprob: s.logprob,
            tokens: s.tokens,
            continuation_logprob: s.continuationLogprob,
            prefix_tokens: s.prefixTokens,
          }));
    x.promptTokens = data.reduce((s, d) => s + d.tokens, 0);
    this.send(x, 200, { object: 'list', model: engine.modelId, data, usage: { prompt_tokens: x.promptTokens, total_tokens: x.promptTokens } });
  }
}

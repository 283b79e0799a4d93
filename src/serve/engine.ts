/**
 * The server's one door into the library: every call `xglm serve` makes on the model goes
 * through an Engine. The HTTP layer (server.ts) speaks OpenAI's shapes and never touches
 * an XglmContext; this file maps its requests onto the public API.
 *
 * It runs on one context. Each completion is a generation on a sequence of its own
 * (`sequence: 'auto'`): generations in flight run concurrently, one token of each per graph
 * evaluation (the context's scheduler), and one whose KV cells do not fit waits for them
 * (`whenContextFull: 'wait'`) instead of failing. Scoring and log-probability calls run alone
 * on the context: they wait for the running generations, and later ones wait for them. With
 * `logprobs`, a completion's per-token log-probabilities come from one such call after the
 * generation (the generation does not report them itself).
 */
import path from 'node:path';
import { XglmError, loadModel, type ContextOptions, type GenerationResult, type XglmContext, type XglmModel } from '../index.js';

export interface EngineOptions extends ContextOptions {
  /** The GGUF file, chosen by whoever starts the server (never by a request). */
  modelFile: string;
  /** The id /v1/models lists and requests must name. @default the file name without .gguf */
  modelId?: string;
  onProgress?: (fraction: number) => void;
}

/** One completion, every sampler knob resolved by the caller. */
export interface CompletionRequest {
  /** Text, or token ids (the leading </s> included, as tokenize gives them). */
  prompt: string | readonly number[];
  maxTokens: number;
  temperature: number;
  topP: number;
  topK: number;
  minP: number;
  presencePenalty: number;
  frequencyPenalty: number;
  logitBias?: Record<number, number>;
  stop: readonly string[];
  seed?: number;
  /** Alternatives per generated token (0 to 5); undefined = no log-probabilities. */
  logprobs?: number;
  /** With logprobs: also the prompt's tokens (after the leading </s>). */
  echo?: boolean;
}

export interface TokenLogprob {
  /** The token's text (a byte token as `bytes:\xNN`). */
  token: string;
  logprob: number;
  /** The most likely tokens at this position, most likely first. */
  top: Array<[string, number]>;
}

export interface CompletionChunk {
  text: string;
  /** Generated token ids since the previous chunk. */
  tokens: number[];
  /** With `logprobs`: one entry per token of this chunk (with `echo`, the prompt's first). */
  logprobs?: TokenLogprob[];
}

export interface CompletionResult {
  text: string;
  finishReason: 'stop' | 'length' | 'abort';
  promptTokens: number;
  completionTokens: number;
  logprobs?: TokenLogprob[];
}

/** A running completion: iterate its chunks (once) and/or await `result`. */
export interface Completion extends AsyncIterable<CompletionChunk> {
  readonly result: Promise<CompletionResult>;
}

export interface ScoreItem {
  logprob: number;
  tokens: number;
}

export interface ContinuationItem extends ScoreItem {
  continuationLogprob: number;
  prefixTokens: number;
}

export interface EngineStats {
  /** Calls into the model not yet settled (completions and scorings, queued or running). */
  active: number;
  /** Completions started, and those that ended aborted. */
  completions: number;
  aborted: number;
}

/** What the server uses of an Engine (tests can stand in for it). */
export interface ServeEngine {
  readonly modelId: string;
  readonly contextSize: number;
  readonly vocabSize: number;
  tokenize(text: string): number[];
  detokenize(ids: readonly number[]): string;
  complete(req: CompletionRequest, signal: AbortSignal): Completion;
  score(texts: readonly string[], signal: AbortSignal): Promise<ScoreItem[]>;
  scoreContinuations(prefix: string, continuations: readonly string[], signal: AbortSignal): Promise<ContinuationItem[]>;
  stats(): EngineStats;
  close(): Promise<void>;
}

const EOS = 2;

function aborted(err: unknown): boolean {
  return err instanceof XglmError && (err.code === 'ERR_XGLM_ABORTED' || err.code === 'ERR_XGLM_DISPOSED');
}

export class Engine implements ServeEngine {
  readonly modelId: string;
  readonly #stats: EngineStats = { active: 0, completions: 0, aborted: 0 };

  private constructor(
    private readonly model: XglmModel,
    private readonly ctx: XglmContext,
    modelId: string,
  ) {
    this.modelId = modelId;
  }

  static async open(options: EngineOptions): Promise<Engine> {
    const { modelFile, modelId, onProgress, ...contextOptions } = options;
    const model = await loadModel(modelFile, onProgress ? { onProgress } : {});
    try {
      const ctx = await model.createContext(contextOptions);
      return new Engine(model, ctx, modelId ?? path.basename(modelFile).replace(/\.gguf$/i, ''));
    } catch (err) {
      await model.dispose();
      throw err;
    }
  }

  /** Tokens a prompt and its completion may use together. */
  get contextSize(): number {
    return this.ctx.contextSize;
  }

  get vocabSize(): number {
    return this.model.tokenizer.vocabSize;
  }

  /** Token ids of a text prompt, starting with </s>, as generate() encodes it. */
  tokenize(text: string): number[] {
    const ids = this.model.tokenize(text);
    return ids.length ? ids : [EOS];
  }

  detokenize(ids: readonly number[]): string {
    return this.model.detokenize(ids);
  }

  stats(): EngineStats {
    return { ...this.#stats };
  }

  /** Counts a call until it settles (the leak check of /health reads `active`). */
  #track<T>(p: Promise<T>): Promise<T> {
    this.#stats.active++;
    return p.finally(() => this.#stats.active--);
  }

  complete(req: CompletionRequest, signal: AbortSignal): Completion {
    this.#stats.completions++;
    const promptIds = typeof req.prompt === 'string' ? this.tokenize(req.prompt) : Array.from(req.prompt);
    const gen = this.ctx.generate(promptIds, {
      sequence: 'auto',
      whenContextFull: 'wait',
      maxTokens: req.maxTokens,
      temperature: req.temperature,
      topP: req.topP,
      topK: req.topK,
      minP: req.minP,
      presencePenalty: req.presencePenalty,
      frequencyPenalty: req.frequencyPenalty,
      ...(req.logitBias ? { logitBias: req.logitBias } : {}),
      stop: req.stop,
      ...(req.seed !== undefined ? { seed: req.seed } : {}),
      signal,
    });
    const base = gen.result.then(
      (r): CompletionResult => this.#result(r, promptIds.length),
      (err: unknown): CompletionResult => {
        if (!aborted(err) || !signal.aborted) throw err;
        this.#stats.aborted++;
        return { text: '', finishReason: 'abort', promptTokens: promptIds.length, completionTokens: 0 };
      },
    );
    if (req.logprobs === undefined) {
      const result = this.#track(base);
      result.catch(() => undefined);
      return {
        result,
        async *[Symbol.asyncIterator]() {
          try {
            for await (const c of gen) yield { text: c.text, tokens: c.tokens };
          } catch (err) {
            if (!aborted(err)) throw err;
          }
        },
      };
    }
    // The generation does not report log-probabilities: the prompt and the generated tokens
    // are scored again once it ends, and a stream gets its text in one chunk with them.
    const top = req.logprobs;
    const result = this.#track(
      base.then(async (r) => {
        if (r.finishReason === 'abort') return r;
        const generated = (await gen.result).tokens;
        const from = req.echo ? 1 : promptIds.length;
        return { ...r, logprobs: await this.#tokenLogprobs([...promptIds, ...generated], from, top, signal) };
      }),
    );
    result.catch(() => undefined);
    return {
      result,
      async *[Symbol.asyncIterator]() {
        const r = await result;
        if (r.finishReason !== 'abort') yield { text: r.text, tokens: [], logprobs: r.logprobs ?? [] };
      },
    };
  }

  #result(r: GenerationResult, promptTokens: number): CompletionResult {
    if (r.finishReason === 'abort') this.#stats.aborted++;
    return {
      text: r.text,
      finishReason: r.finishReason === 'eos' ? 'stop' : r.finishReason,
      promptTokens,
      completionTokens: r.usage.completionTokens,
    };
  }

  /** Log-probability and top-k of ids[from..], each given the tokens before it. */
  async #tokenLogprobs(ids: number[], from: number, top: number, signal: AbortSignal): Promise<TokenLogprob[]> {
    const r = await this.ctx.logprobs(ids, { top: Math.max(top, 1), signal });
    const out: TokenLogprob[] = [];
    for (let i = Math.max(from, 1); i < ids.length; i++) {
      out.push({
        token: this.tokenText(ids[i]!),
        logprob: r.logprobs[i - 1]!,
        top: r.top[i - 1]!.slice(0, top).map(([id, lp]) => [this.tokenText(id), lp]),
      });
    }
    return out;
  }

  /** A token as text: its surface (▁ as a space), a byte token as `bytes:\xNN`, a special token by name. */
  tokenText(id: number): string {
    const tok = this.model.tokenizer;
    if (tok.isSpecial(id)) return tok.idToToken(id) ?? '';
    const byte = tok.byteValue(id);
    if (byte >= 0) return `bytes:\\x${byte.toString(16).padStart(2, '0')}`;
    return tok.surface(id);
  }

  /** XglmContext.score: each text's total log-probability after the leading </s>. */
  score(texts: readonly string[], signal: AbortSignal): Promise<ScoreItem[]> {
    return this.#track(this.ctx.score(texts, { signal }).then((r) => r.map((s) => ({ logprob: s.logprob, tokens: s.tokens }))));
  }

  /** XglmContext.scoreContinuations. */
  scoreContinuations(prefix: string, continuations: readonly string[], signal: AbortSignal): Promise<ContinuationItem[]> {
    return this.#track(
      this.ctx
        .scoreContinuations(prefix, continuations, { signal })
        .then((r) => r.map((s) => ({ logprob: s.logprob, tokens: s.tokens, continuationLogprob: s.continuationLogprob, prefixTokens: s.prefixTokens }))),
    );
  }

  /** Aborts what runs, frees the context and the weights. */
  async close(): Promise<void> {
    await this.model.dispose();
  }
}

/**
 * A context: one KV cache with its compute thread, and the policy around it — which tokens
 * each sequence has cached (a new call reuses the longest common prefix and evaluates only
 * the rest), what happens when the context is full, and the order of calls (queued: one
 * call at a time per context; separate contexts run in parallel).
 *
 * XglmContext is the public facade; the state and the engine live in its runtime core
 * (src/runtime/core.ts), which generate.ts and score.ts drive.
 */
import type { EngineModel } from './engine/model.js';
import { Generation, runGeneration, type GenerateOptions } from './generate.js';
import type { XglmModel } from './model.js';
import type { KvType } from './native.js';
import { ContextCore, bindCore } from './runtime/core.js';
import {
  logprobsOf,
  perplexityOf,
  scoreContinuationsOf,
  scoreTexts,
  type LogprobsOptions,
  type LogprobsResult,
  type PerplexityOptions,
  type PerplexityResult,
  type ScoreOptions,
  type ContinuationOptions,
  type ScoreResult,
  type ContinuationScore,
} from './score.js';

export interface ContextOptions {
  /** KV-cache cells shared by all sequences (tokens). @default the model's context length (2,048 for XGLM) */
  contextSize?: number;
  /** Tokens per graph evaluation; longer prompts are split. @default 512 */
  batchSize?: number;
  /** Compute threads. @default $XGLM_THREADS, else the number of physical cores */
  threads?: number;
  /** KV-cache element type; `f32` makes an F32 model match PyTorch to float32 accuracy. @default 'f16' */
  kvType?: KvType;
  /** Logits rows per graph evaluation when scoring (each row is n_vocab floats). @default 32 */
  outputsPerBatch?: number;
  /**
   * What to do when a prompt plus the tokens to generate do not fit. XGLM's positions are
   * absolute, so a full context cannot be shifted: `'error'` refuses with
   * ERR_XGLM_CONTEXT_OVERFLOW; `'truncate-left'` keeps the leading </s> and the most recent
   * tokens (half the context) and evaluates them again.
   * @default 'error'
   */
  contextOverflow?: 'error' | 'truncate-left';
}

/** Counters a context keeps (tests and benchmarks read them). */
export interface ContextStats {
  /** Tokens evaluated by the model (prefix reuse lowers it). */
  evaluatedTokens: number;
  /** Calls into the native evaluate. */
  evaluations: number;
  /** Logits rows computed (each is an n_vocab-wide product: the largest cost of scoring). */
  logitsRows: number;
}

export class XglmContext {
  readonly #core: ContextCore;
  /** Counters of this context (the same object throughout its life). */
  readonly stats: ContextStats;
  readonly model: XglmModel;
  /** Positions available: min(contextSize, the model's context length). */
  readonly contextSize: number;
  readonly batchSize: number;
  readonly outputsPerBatch: number;
  readonly contextOverflow: NonNullable<ContextOptions['contextOverflow']>;

  private constructor(core: ContextCore) {
    this.#core = core;
    bindCore(this, core);
    this.stats = core.stats;
    this.model = core.model;
    this.contextSize = core.contextSize;
    this.batchSize = core.batchSize;
    this.outputsPerBatch = core.outputsPerBatch;
    this.contextOverflow = core.contextOverflow;
  }

  /** @internal use model.createContext() */
  static async create(model: XglmModel, engineModel: EngineModel, options: ContextOptions, onDispose: () => void): Promise<XglmContext> {
    return new XglmContext(await ContextCore.create(model, engineModel, options, onDispose));
  }

  get threads(): number {
    return this.#core.engine().info.threads;
  }

  get disposed(): boolean {
    return this.#core.disposed;
  }

  /** The tokens sequence `seq` has cached. */
  cachedTokens(seq = 0): readonly number[] {
    return this.#core.cachedTokens(seq);
  }

  /**
   * Continues a prompt. The returned Generation is an async iterable of chunks
   * `{ text, tokens }` and a promise of the final result (`await gen` or `await gen.result`).
   */
  generate(prompt: string | readonly number[], options: GenerateOptions = {}): Generation {
    return runGeneration(this.#core, prompt, options);
  }

  /** Each text's total log-probability: the sum over all tokens after the leading </s> (the XGLM model card's COPA recipe). */
  score(texts: readonly string[], options: ScoreOptions = {}): Promise<ScoreResult[]> {
    const core = this.#core;
    return core.enqueue((signal) => scoreTexts(core, texts, options, signal), options.signal);
  }

  /**
   * Scores `prefix + continuation` for every continuation, evaluating the shared tokens once
   * and all candidates in one batch. Equals score() of the full texts.
   */
  scoreContinuations(prefix: string, continuations: readonly string[], options: ContinuationOptions = {}): Promise<ContinuationScore[]> {
    const core = this.#core;
    return core.enqueue((signal) => scoreContinuationsOf(core, prefix, continuations, options, signal), options.signal);
  }

  /** Per-position log-probabilities of a text and the top-k alternatives at every position. */
  logprobs(text: string | readonly number[], options: LogprobsOptions = {}): Promise<LogprobsResult> {
    const core = this.#core;
    return core.enqueue((signal) => logprobsOf(core, text, options, signal), options.signal);
  }

  /** Perplexity of a long text with a sliding window. */
  perplexity(text: string, options: PerplexityOptions = {}): Promise<PerplexityResult> {
    const core = this.#core;
    return core.enqueue((signal) => perplexityOf(core, text, options, signal), options.signal);
  }

  /** Empties the KV cache of every sequence. */
  clear(): Promise<void> {
    const core = this.#core;
    return core.enqueue(() => core.forget());
  }

  /**
   * Frees the KV cache and the compute thread. Running work is aborted (a generation ends
   * with finishReason 'abort'); calls queued after it reject with ERR_XGLM_DISPOSED.
   */
  dispose(): Promise<void> {
    return this.#core.dispose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}

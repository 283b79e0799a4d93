/**
 * The engine, as TypeScript sees it: the native Model and Context (src/native.ts) behind a
 * thin layer that validates every argument before it crosses (precise XglmErrors, so the
 * native side gets plain, valid values) and turns native rejections into XglmErrors.
 * Policy (which tokens to cache, generation loops, tokenization) lives above this file.
 */
import { XglmError, type XglmErrorCode } from './errors.js';
import {
  native,
  type NativeContext,
  type NativeContextOptions,
  type NativeGenerateOptions,
  type NativeHParams,
  type NativeKvType,
  type NativeLogprobs,
  type NativeModel,
  type NativeSamplerParams,
  type NativeTensorInfo,
} from './native.js';

/** Sequence ids are 0 .. MAX_SEQUENCES-1 (native/xglm.h XGLM_MAX_SEQ). */
export const MAX_SEQUENCES = 64;

function invalid(message: string, hint?: string): XglmError {
  return new XglmError('ERR_XGLM_INVALID_ARGUMENT', message, hint ? { hint } : {});
}

/** Native rejections carry `code`; anything else is passed through. */
function fromNative(err: unknown): unknown {
  const e = err as { code?: string; message?: string };
  if (e && typeof e.code === 'string' && e.code.startsWith('ERR_XGLM_') && !(err instanceof XglmError)) {
    const message = (e.message ?? '').replace(/^xglm: /, '');
    const hints: Partial<Record<string, string>> = {
      ERR_XGLM_CONTEXT_OVERFLOW: 'remove finished sequences (kvRemove) or create the context with a larger contextSize',
      ERR_XGLM_DISPOSED: 'create a new context',
    };
    return new XglmError(e.code as XglmErrorCode, message, { cause: err, ...(hints[e.code] ? { hint: hints[e.code] } : {}) });
  }
  return err;
}

async function call<T>(p: () => Promise<T>): Promise<T> {
  try {
    return await p();
  } catch (err) {
    throw fromNative(err);
  }
}

function checkInt(name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw invalid(`${name} must be an integer in [${min}, ${max}], got ${String(v)}`);
  }
  return v;
}

function checkNumber(name: string, v: unknown, min: number, max: number, openMin = false): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max || (openMin && v === min)) {
    throw invalid(`${name} must be a number in ${openMin ? '(' : '['}${min}, ${max}], got ${String(v)}`);
  }
  return v;
}

export interface LoadModelOptions {
  /**
   * Copy matmul weights that ggml can repack (q4_0, q4_k, …) into its interleaved CPU layout:
   * faster prompt processing, those bytes are owned instead of shared with the page cache.
   * @default true
   */
  useRepack?: boolean;
  /** Called with the loaded fraction (0..1). */
  onProgress?: (fraction: number) => void;
}

/** Maps a GGUF file (no copy of the weights) and validates it against the layout of docs/converting.md. */
export async function loadModel(path: string, options: LoadModelOptions = {}): Promise<EngineModel> {
  if (typeof path !== 'string' || path === '') throw invalid('model path must be a non-empty string');
  const m = await call(() =>
    native().Model.load(path, { useRepack: options.useRepack ?? true }, options.onProgress ? (f) => options.onProgress!(f) : undefined),
  );
  return new EngineModel(m);
}

export class EngineModel {
  /** @internal */
  constructor(readonly native: NativeModel) {}

  get hparams(): NativeHParams {
    return this.native.hparams;
  }

  tensors(): NativeTensorInfo[] {
    return this.native.tensors();
  }

  async createContext(options: ContextOptions = {}): Promise<EngineContext> {
    const hp = this.hparams;
    const o: NativeContextOptions = {};
    if (options.contextSize !== undefined) o.contextSize = checkInt('contextSize', options.contextSize, 1, 1 << 24);
    if (options.batchSize !== undefined) o.batchSize = checkInt('batchSize', options.batchSize, 1, 1 << 16);
    if (options.outputsPerBatch !== undefined) o.outputsPerBatch = checkInt('outputsPerBatch', options.outputsPerBatch, 1, 1 << 16);
    if (options.threads !== undefined) o.threads = checkInt('threads', options.threads, 0, 512);
    else if (process.env.XGLM_THREADS) o.threads = checkInt('XGLM_THREADS', Number(process.env.XGLM_THREADS), 0, 512);
    if (options.kvType !== undefined) {
      if (!['f16', 'f32', 'q8_0'].includes(options.kvType)) throw invalid(`kvType must be 'f16', 'f32' or 'q8_0', got ${String(options.kvType)}`);
      o.kvType = options.kvType;
    }
    if (options.keepActivations) o.keepActivations = true;
    const ctx = await call(() => native().Context.create(this.native, o));
    return new EngineContext(ctx, hp);
  }

  /** Releases this handle; contexts keep the weights until they are disposed. */
  dispose(): void {
    this.native.dispose();
  }
}

export interface ContextOptions {
  /** KV cells shared by all sequences. @default the model's context length */
  contextSize?: number;
  /** Tokens per graph evaluation; longer batches are split. @default 512 */
  batchSize?: number;
  /** Logits rows per graph evaluation. @default 32 */
  outputsPerBatch?: number;
  /** Compute threads. @default $XGLM_THREADS, else the number of physical cores */
  threads?: number;
  /** KV-cache element type; `f32` makes an F32 model match PyTorch to float32 accuracy. @default 'f16' */
  kvType?: NativeKvType;
  /** Keep every layer's residual stream of the last evaluation (getActivation). @default false */
  keepActivations?: boolean;
}

export interface Batch {
  tokens: ArrayLike<number>;
  /** 0-based sequence index of each token (the leading `</s>` is 0). */
  positions: ArrayLike<number>;
  /** Sequence of each token. @default all 0 */
  seqIds?: ArrayLike<number>;
  /** Which tokens keep logits: a flag per token, or 'last' / 'all'. @default 'last' */
  logits?: ArrayLike<boolean | number> | 'last' | 'all';
}

export interface SamplerOptions {
  /** 0 = greedy. @default 1 */
  temperature?: number;
  /** 0 = off. @default 0 */
  topK?: number;
  /** @default 1 (off) */
  topP?: number;
  /** @default 0 (off) */
  minP?: number;
  /** @default 1 (off) */
  typicalP?: number;
  /** @default 1 (off) */
  repeatPenalty?: number;
  /** @default 0 */
  presencePenalty?: number;
  /** @default 0 */
  frequencyPenalty?: number;
  /** Recent tokens the penalties look at. @default none */
  penaltyTokens?: ArrayLike<number>;
  /** Added to the logits before sampling; -Infinity bans a token. */
  logitBias?: ReadonlyMap<number, number> | Record<number, number>;
  /** Reseeds the context's generator before this draw (same seed → same tokens on every platform). */
  seed?: number;
}

/** What EngineContext.generate loops over (the sampler's options come separately). */
export interface GenerateLoopOptions {
  /** Position of the first generated token (the batch row's position + 1). */
  position: number;
  seqId?: number;
  /** Draw k is seeded with a mix of `seed` and `firstStep + k`: the same in every process. */
  seed: number;
  /** @default 0 */
  firstStep?: number;
  /** @default unlimited */
  maxSteps?: number;
  /** @default the model's context length */
  positionLimit?: number;
  /** @default -1 (none) */
  eosToken?: number;
  /** Recent tokens the penalties see: the sampler's penaltyTokens, then the generated ones. @default 0 */
  penaltyWindow?: number;
}

export class EngineContext {
  private lastBatchSize = 0;

  /** @internal */
  constructor(
    readonly native: NativeContext,
    readonly hparams: NativeHParams,
  ) {}

  get info(): { contextSize: number; threads: number; computeMs: number } {
    return this.native.info;
  }

  /** Evaluates a batch, adding it to the KV cache. Rejects with ERR_XGLM_ABORTED when `signal` aborts. */
  async evaluate(batch: Batch, options: { signal?: AbortSignal } = {}): Promise<void> {
    const n = batch.tokens.length;
    if (n === 0) throw invalid('the batch is empty');
    if (batch.positions.length !== n) throw invalid(`positions has ${batch.positions.length} entries for ${n} tokens`);
    if (batch.seqIds && batch.seqIds.length !== n) throw invalid(`seqIds has ${batch.seqIds.length} entries for ${n} tokens`);
    const tokens = new Int32Array(n);
    const positions = new Int32Array(n);
    const seqIds = new Int32Array(n);
    const { nVocab, nCtxTrain } = this.hparams;
    for (let i = 0; i < n; i++) {
      tokens[i] = checkInt(`tokens[${i}]`, batch.tokens[i], 0, nVocab - 1);
      const p = batch.positions[i];
      if (typeof p !== 'number' || !Number.isInteger(p) || p < 0 || p >= nCtxTrain) {
        throw new XglmError('ERR_XGLM_CONTEXT_OVERFLOW', `positions[${i}] = ${String(p)} is outside the model's context [0, ${nCtxTrain})`, {
          hint: 'XGLM uses absolute positions: truncate the input to the model context length',
        });
      }
      positions[i] = p;
      seqIds[i] = batch.seqIds ? checkInt(`seqIds[${i}]`, batch.seqIds[i], 0, MAX_SEQUENCES - 1) : 0;
    }
    const want = new Uint8Array(n);
    const l = batch.logits ?? 'last';
    if (l === 'last') want[n - 1] = 1;
    else if (l === 'all') want.fill(1);
    else {
      if (l.length !== n) throw invalid(`logits has ${l.length} flags for ${n} tokens`);
      for (let i = 0; i < n; i++) want[i] = l[i] ? 1 : 0;
    }
    const signal = options.signal;
    if (signal?.aborted) throw new XglmError('ERR_XGLM_ABORTED', 'evaluation aborted');
    const onAbort = () => this.native.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    this.lastBatchSize = n;  // later calls may be queued before this one settles
    try {
      await call(() => this.native.evaluate(tokens, positions, seqIds, want));
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  private checkRow(name: string, i: unknown): number {
    return checkInt(name, i, 0, Math.max(0, this.lastBatchSize - 1));
  }

  /** Picks the next token from the logits of batch token `batchIndex`; -1 if every token is banned. */
  sample(batchIndex: number, options: SamplerOptions = {}): Promise<number> {
    const p = this.samplerParams(options);
    if (options.seed !== undefined) p.seed = checkInt('seed', options.seed, 0, Number.MAX_SAFE_INTEGER);
    const row = this.checkRow('batchIndex', batchIndex);
    return call(() => this.native.sample(row, p));
  }

  /**
   * The generation loop, natively: draws from row `batchIndex`, calls `onToken`, evaluates the
   * token at the next position, draws again… Stops after a token equal to `eosToken`, after
   * `maxSteps` draws, when the next position would be `positionLimit`, or (before evaluating)
   * once onToken returned true. Tokens past a stop may have been evaluated: `endPosition` is
   * one past the last position in the KV cache. Rejects with ERR_XGLM_ABORTED when `signal` aborts.
   */
  async generate(
    batchIndex: number,
    sampler: SamplerOptions,
    options: GenerateLoopOptions,
    onToken: (token: number, computeMs: number) => boolean | void,
    control: { signal?: AbortSignal } = {},
  ): Promise<{ steps: number; endPosition: number }> {
    const p = this.samplerParams(sampler);
    const { nVocab, nCtxTrain } = this.hparams;
    const o: NativeGenerateOptions = {
      position: checkInt('position', options.position, 0, nCtxTrain),
      seqId: checkInt('seqId', options.seqId ?? 0, 0, MAX_SEQUENCES - 1),
      seed: checkInt('seed', options.seed, 0, Number.MAX_SAFE_INTEGER),
      firstStep: checkInt('firstStep', options.firstStep ?? 0, 0, Number.MAX_SAFE_INTEGER),
      maxSteps: options.maxSteps === undefined || options.maxSteps === Infinity ? 2 ** 31 - 1 : checkInt('maxSteps', options.maxSteps, 1, 2 ** 31 - 1),
      positionLimit: checkInt('positionLimit', options.positionLimit ?? nCtxTrain, 0, nCtxTrain),
      eosToken: checkInt('eosToken', options.eosToken ?? -1, -1, nVocab - 1),
      penaltyWindow: checkInt('penaltyWindow', options.penaltyWindow ?? 0, 0, 2 ** 31 - 1),
    };
    if (typeof onToken !== 'function') throw invalid('onToken must be a function');
    const row = this.checkRow('batchIndex', batchIndex);
    const signal = control.signal;
    if (signal?.aborted) throw new XglmError('ERR_XGLM_ABORTED', 'evaluation aborted');
    const onAbort = () => this.native.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    this.lastBatchSize = 1; // the loop's evaluations are one token each
    try {
      return await call(() => this.native.generate(row, p, o, onToken));
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  private samplerParams(options: SamplerOptions): NativeSamplerParams {
    const p: NativeSamplerParams = {};
    if (options.temperature !== undefined) p.temperature = checkNumber('temperature', options.temperature, 0, 1e6);
    if (options.topK !== undefined) p.topK = checkInt('topK', options.topK, 0, this.hparams.nVocab);
    if (options.topP !== undefined) p.topP = checkNumber('topP', options.topP, 0, 1, true);
    if (options.minP !== undefined) p.minP = checkNumber('minP', options.minP, 0, 1);
    if (options.typicalP !== undefined) p.typicalP = checkNumber('typicalP', options.typicalP, 0, 1, true);
    if (options.repeatPenalty !== undefined) p.repeatPenalty = checkNumber('repeatPenalty', options.repeatPenalty, 0, 1e6, true);
    if (options.presencePenalty !== undefined) p.presencePenalty = checkNumber('presencePenalty', options.presencePenalty, -1e6, 1e6);
    if (options.frequencyPenalty !== undefined) p.frequencyPenalty = checkNumber('frequencyPenalty', options.frequencyPenalty, -1e6, 1e6);
    if (options.penaltyTokens !== undefined) {
      p.penaltyTokens = Int32Array.from(options.penaltyTokens, (t, i) => checkInt(`penaltyTokens[${i}]`, t, 0, this.hparams.nVocab - 1));
    }
    if (options.logitBias !== undefined) {
      const entries: Array<[number, number]> =
        options.logitBias instanceof Map ? [...options.logitBias.entries()] : Object.entries(options.logitBias).map(([k, v]) => [Number(k), v as number]);
      p.logitBiasIds = Int32Array.from(entries, ([id]) => checkInt('logitBias token', id, 0, this.hparams.nVocab - 1));
      p.logitBiasValues = Float32Array.from(entries, ([id, v]) => {
        if (typeof v !== 'number' || Number.isNaN(v) || v === Infinity) throw invalid(`logitBias[${id}] must be a finite number or -Infinity`);
        return v;
      });
    }
    return p;
  }

  /**
   * For each row: log P(targets[i]) (NaN where the target is -1) and the topK most likely
   * tokens with their log-probabilities.
   */
  logprobs(batchIndices: ArrayLike<number>, targets: ArrayLike<number>, topK = 0): Promise<NativeLogprobs> {
    if (batchIndices.length !== targets.length) throw invalid('batchIndices and targets must have the same length');
    const rows = Int32Array.from(batchIndices, (r, i) => this.checkRow(`batchIndices[${i}]`, r));
    const t = Int32Array.from(targets, (id, i) => checkInt(`targets[${i}]`, id, -1, this.hparams.nVocab - 1));
    const k = checkInt('topK', topK, 0, this.hparams.nVocab);
    return call(() => this.native.logprobs(rows, t, k));
  }

  /** A copy of one logits row (n_vocab floats): for tests and tools, not per-token use. */
  getLogits(batchIndex: number): Promise<Float32Array> {
    const row = this.checkRow('batchIndex', batchIndex);
    return call(() => this.native.getLogits(row));
  }

  getActivation(name: string): Promise<Float32Array | null> {
    return call(() => this.native.getActivation(name));
  }

  kvClear(): Promise<void> {
    return call(() => this.native.kvClear());
  }

  /** Removes positions [p0, p1) of a sequence; p1 = -1 means to the end. */
  kvRemove(seqId: number, p0 = 0, p1 = -1): Promise<void> {
    checkInt('seqId', seqId, 0, MAX_SEQUENCES - 1);
    return call(() => this.native.kvRemove(seqId, checkInt('p0', p0, 0, 2 ** 31 - 1), checkInt('p1', p1, -1, 2 ** 31 - 1)));
  }

  /** Shares positions [p0, p1) of `src` with `dst` (a prompt prefix evaluated once). */
  kvCopy(srcSeqId: number, dstSeqId: number, p0 = 0, p1 = -1): Promise<void> {
    checkInt('srcSeqId', srcSeqId, 0, MAX_SEQUENCES - 1);
    checkInt('dstSeqId', dstSeqId, 0, MAX_SEQUENCES - 1);
    return call(() => this.native.kvCopy(srcSeqId, dstSeqId, checkInt('p0', p0, 0, 2 ** 31 - 1), checkInt('p1', p1, -1, 2 ** 31 - 1)));
  }

  kvSeqPosMax(seqId: number): Promise<number> {
    return call(() => this.native.kvSeqPosMax(checkInt('seqId', seqId, 0, MAX_SEQUENCES - 1)));
  }

  /** Aborts the running evaluation and work queued before this call. */
  abort(): void {
    this.native.abort();
  }

  dispose(): Promise<void> {
    return call(() => this.native.dispose());
  }
}

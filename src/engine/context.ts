/**
 * The engine's context: a native Context (src/native.ts) behind the engine layer's checks
 * (./checks.ts): every argument validated before it crosses, native rejections turned into
 * XglmErrors. Policy (which tokens to cache, generation loops, tokenization) lives above this
 * layer, in src/runtime/core.ts.
 */
import { XglmError } from '../errors.js';
import type { NativeContext, NativeGenerateOptions, NativeHParams, NativeLogprobs, NativeSamplerParams } from '../native.js';
import type { SamplerSettings } from '../sampler.js';
import { MAX_SEQUENCES, call, checkInt, checkNumber, invalid } from './checks.js';

export interface Batch {
  tokens: ArrayLike<number>;
  /** 0-based sequence index of each token (the leading `</s>` is 0). */
  positions: ArrayLike<number>;
  /** Sequence of each token. @default all 0 */
  seqIds?: ArrayLike<number>;
  /** Which tokens keep logits: a flag per token, or 'last' / 'all'. @default 'last' */
  logits?: ArrayLike<boolean | number> | 'last' | 'all';
}

/**
 * The sampler as this layer takes it: every knob given (this layer has no defaults: callers
 * resolve SamplerOptions with src/sampler.ts first, tests spell out SAMPLER_OFF).
 */
export interface EngineSampler extends Omit<SamplerSettings, 'penaltyWindow'>, Pick<NativeSamplerParams, 'seed'> {
  /** Recent tokens the penalties look at (absent: none). */
  penaltyTokens?: ArrayLike<number>;
}

export class EngineContext {
  private lastBatchSize = 0;
  private streams = 0;

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

  /**
   * Picks the next token from the logits of batch token `batchIndex`; -1 if every token is banned.
   * `options.seed` reseeds the context's generator first (generate() seeds each draw from its loop options).
   */
  sample(batchIndex: number, options: EngineSampler): Promise<number> {
    const p = this.samplerParams(options);
    if (options.seed !== undefined) p.seed = checkInt('seed', options.seed, 0, Number.MAX_SAFE_INTEGER);
    const row = this.checkRow('batchIndex', batchIndex);
    return call(() => this.native.sample(row, p));
  }

  /**
   * A generation, natively: evaluates `prompt` (at least one token) at positions
   * options.position - prompt.length …, then draws, calls `onToken`, evaluates the token at the
   * next position, draws again… Generations on different sequences run concurrently, one token
   * of each per graph evaluation. Stops after a token equal to `eosToken`, after `maxSteps`
   * draws, when the next position would be `positionLimit`, or (before evaluating) once
   * onToken returned true. Tokens past a stop may have been evaluated: `endPosition` is one
   * past the last position in the KV cache. When `signal` aborts, this stream alone ends
   * (resolving, like a stop) before its next evaluation.
   */
  async generate(
    prompt: ArrayLike<number>,
    sampler: EngineSampler,
    options: Omit<NativeGenerateOptions, 'streamId' | 'reserve' | 'waitForCells'> & { reserve?: number; waitForCells?: boolean },
    onToken: (token: number, computeMs: number) => boolean | void,
    control: { signal?: AbortSignal; onPromptProgress?: (evaluated: number) => void } = {},
  ): Promise<{ steps: number; endPosition: number }> {
    const p = this.samplerParams(sampler);
    const { nVocab, nCtxTrain } = this.hparams;
    if (prompt.length === 0) throw invalid('the prompt must hold at least one token');
    const ids = Int32Array.from(prompt, (t, i) => checkInt(`prompt[${i}]`, t, 0, nVocab - 1));
    const o: NativeGenerateOptions = {
      position: checkInt('position', options.position, ids.length, nCtxTrain),
      seqId: checkInt('seqId', options.seqId, 0, MAX_SEQUENCES - 1),
      seed: checkInt('seed', options.seed, 0, Number.MAX_SAFE_INTEGER),
      firstStep: checkInt('firstStep', options.firstStep, 0, Number.MAX_SAFE_INTEGER),
      maxSteps: options.maxSteps === Infinity ? 2 ** 31 - 1 : checkInt('maxSteps', options.maxSteps, 1, 2 ** 31 - 1),
      positionLimit: checkInt('positionLimit', options.positionLimit, 0, nCtxTrain),
      eosToken: checkInt('eosToken', options.eosToken, -1, nVocab - 1),
      penaltyWindow: checkInt('penaltyWindow', options.penaltyWindow, 0, 2 ** 31 - 1),
      reserve: checkInt('reserve', options.reserve ?? 0, 0, nCtxTrain),
      waitForCells: options.waitForCells ?? false,
      streamId: ++this.streams,
    };
    if (typeof onToken !== 'function') throw invalid('onToken must be a function');
    const signal = control.signal;
    if (signal?.aborted) throw new XglmError('ERR_XGLM_ABORTED', 'evaluation aborted');
    const onAbort = () => this.native.stopStream(o.streamId);
    signal?.addEventListener('abort', onAbort, { once: true });
    this.lastBatchSize = 0; // the streams' evaluations leave no rows to read
    try {
      return await call(() => this.native.generate(ids, p, o, onToken, control.onPromptProgress));
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Every knob checked and passed on: the native sampler's own fallbacks never decide. */
  private samplerParams(options: EngineSampler): NativeSamplerParams {
    const nVocab = this.hparams.nVocab;
    const p: NativeSamplerParams = {
      temperature: checkNumber('temperature', options.temperature, 0, 1e6),
      topK: checkInt('topK', options.topK, 0, nVocab),
      topP: checkNumber('topP', options.topP, 0, 1, true),
      minP: checkNumber('minP', options.minP, 0, 1),
      typicalP: checkNumber('typicalP', options.typicalP, 0, 1, true),
      repeatPenalty: checkNumber('repeatPenalty', options.repeatPenalty, 0, 1e6, true),
      presencePenalty: checkNumber('presencePenalty', options.presencePenalty, -1e6, 1e6),
      frequencyPenalty: checkNumber('frequencyPenalty', options.frequencyPenalty, -1e6, 1e6),
    };
    if (options.penaltyTokens !== undefined) {
      p.penaltyTokens = Int32Array.from(options.penaltyTokens, (t, i) => checkInt(`penaltyTokens[${i}]`, t, 0, nVocab - 1));
    }
    if (options.logitBias !== undefined) {
      const entries: Array<[number, number]> =
        options.logitBias instanceof Map ? [...options.logitBias.entries()] : Object.entries(options.logitBias).map(([k, v]) => [Number(k), v as number]);
      p.logitBiasIds = Int32Array.from(entries, ([id]) => checkInt('logitBias token', id, 0, nVocab - 1));
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

/**
 * The runtime core of one context: the single owner of its mutable state and the only code
 * that drives its EngineContext (src/engine/context.ts).
 *
 * What it owns:
 * - the call order: `enqueue` runs a call alone (scoring, logprobs, clear: they read the rows of
 *   their own evaluations), after every call queued before it; `enqueueOn(seq)` runs a
 *   generation concurrently with the generations on other sequences (the native scheduler
 *   batches one token of each per graph evaluation), after the calls queued before it on the
 *   same sequence and after any `enqueue` call queued before it (separate contexts run in
 *   parallel, each on its own native thread);
 * - which sequence a generation without one gets (`pickSequence`);
 * - the abort controllers of the queued and running calls (`dispose` aborts them all);
 * - the tokens each sequence has cached (token k sits at position k), kept true to the KV
 *   cache also when an evaluation fails midway (`resync`), and prefix reuse (`reusePrefix`);
 * - evaluation in native batches (`evaluateItems`: at most batchSize tokens and
 *   outputsPerBatch logits rows per native call), the native generation stream with its
 *   bookkeeping (`generateTokens`), sequence removal and sharing (`forget`, `sharePrefix`);
 * - the counters (`stats`) and disposal.
 *
 * Who calls it: the public XglmContext (src/context.ts) is a facade holding one core in a
 * private field; generate.ts and score.ts receive the core and express their policies (prompt
 * evaluation, sampling loops, scoring layouts) through it. Nothing else reaches the engine
 * context of a public context.
 */
import type { ContextOptions, ContextStats } from '../context.js';
import type { EngineContext, EngineSampler } from '../engine/context.js';
import type { EngineModel } from '../engine/model.js';
import { XglmError } from '../errors.js';
import type { XglmModel } from '../model.js';
import type { NativeGenerateOptions } from '../native.js';
import { MAX_SEQUENCES } from '../engine/checks.js';

/**
 * One token to evaluate. `logits` keeps its logits row (to sample from), `target` asks for
 * log P(target) at this row, `top` for the row's top-k.
 */
export interface EvalItem {
  token: number;
  pos: number;
  seq: number;
  logits?: boolean;
  target?: number;
  top?: boolean;
}

export interface EvalOutput {
  /** Per item: log P(target), NaN where none was asked. */
  logprobs: Float64Array;
  /** Per item that asked for `top`: [id, logprob] pairs, most likely first. */
  top: Array<Array<[number, number]> | undefined>;
  /** The last item's index in the last native batch (the row to sample from). */
  lastBatchIndex: number;
}

export type ContextOverflow = NonNullable<ContextOptions['contextOverflow']>;

export class ContextCore {
  readonly stats: ContextStats = { evaluatedTokens: 0, evaluations: 0, logitsRows: 0 };
  /** Tokens cached per sequence: token k sits at position k. */
  private readonly cached = new Map<number, number[]>();
  private engineContext: EngineContext | undefined;
  private readonly controllers = new Set<AbortController>();

  private constructor(
    /** The model this context runs (its tokenizer and vocabulary). */
    readonly model: XglmModel,
    engineContext: EngineContext,
    /** Positions available: min(contextSize, the model's context length). */
    readonly contextSize: number,
    readonly batchSize: number,
    readonly outputsPerBatch: number,
    readonly contextOverflow: ContextOverflow,
    private readonly onDispose: () => void,
  ) {
    this.engineContext = engineContext;
  }

  /** Validates the public options, resolves their defaults and creates the engine context. */
  static async create(model: XglmModel, engineModel: EngineModel, options: ContextOptions, onDispose: () => void): Promise<ContextCore> {
    const overflow = options.contextOverflow ?? 'error';
    if (overflow !== 'error' && overflow !== 'truncate-left') {
      throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `contextOverflow must be 'error' or 'truncate-left', got ${String(overflow)}`);
    }
    const nCtxTrain = engineModel.hparams.nCtxTrain;
    const requested = options.contextSize ?? nCtxTrain;
    const batchSize = options.batchSize ?? 512;
    const outputs = options.outputsPerBatch ?? 32;
    const ctx = await engineModel.createContext({
      contextSize: requested,
      batchSize,
      outputsPerBatch: outputs,
      ...(options.threads !== undefined ? { threads: options.threads } : {}),
      ...(options.kvType !== undefined ? { kvType: options.kvType } : {}),
    });
    const size = Math.min(ctx.info.contextSize, nCtxTrain);
    return new ContextCore(model, ctx, size, batchSize, outputs, overflow, onDispose);
  }

  get disposed(): boolean {
    return this.engineContext === undefined;
  }

  /** The engine context; throws ERR_XGLM_DISPOSED once the context is disposed. */
  engine(): EngineContext {
    if (!this.engineContext) throw new XglmError('ERR_XGLM_DISPOSED', 'the context was disposed', { hint: 'create a new context with model.createContext()' });
    return this.engineContext;
  }

  /** The tokens sequence `seq` has cached. */
  cachedTokens(seq = 0): readonly number[] {
    return this.cached.get(seq) ?? [];
  }

  /** Runs `fn` alone, after every call queued before it (it reads the rows of its own evaluations). */
  enqueue<T>(fn: (signal: AbortSignal) => Promise<T>, signal?: AbortSignal): Promise<T> {
    return this.schedule(undefined, fn, signal);
  }

  /**
   * Runs `fn` (a generation on sequence `seq`) after the calls queued before it on that
   * sequence and after any call queued before it with `enqueue`; it runs concurrently with the
   * generations on other sequences.
   */
  enqueueOn<T>(seq: number, fn: (signal: AbortSignal) => Promise<T>, signal?: AbortSignal): Promise<T> {
    return this.schedule(seq, fn, signal);
  }

  private readonly waiting: Array<{ seq: number | undefined; start: () => void }> = [];
  private readonly runningSeqs = new Set<number>();
  private runningShared = 0;
  private runningAlone = false;
  /** Sequences last used (for pickSequence), oldest first. */
  private readonly lastUse = new Map<number, number>();
  private uses = 0;

  private schedule<T>(seq: number | undefined, fn: (signal: AbortSignal) => Promise<T>, signal?: AbortSignal): Promise<T> {
    const controller = new AbortController();
    const onAbort = () => controller.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) controller.abort();
    this.controllers.add(controller);
    if (seq !== undefined) this.lastUse.set(seq, ++this.uses);
    const done = new Promise<T>((resolve, reject) => {
      const start = () => {
        if (seq === undefined) this.runningAlone = true;
        else {
          this.runningShared++;
          this.runningSeqs.add(seq);
        }
        const run = (async () => {
          this.engine();
          return fn(controller.signal);
        })();
        run
          .finally(() => {
            signal?.removeEventListener('abort', onAbort);
            this.controllers.delete(controller);
            if (seq === undefined) this.runningAlone = false;
            else {
              this.runningShared--;
              this.runningSeqs.delete(seq);
            }
            this.pump();
          })
          .then(resolve, reject);
      };
      this.waiting.push({ seq, start });
      this.pump();
    });
    return done;
  }

  /** Starts the waiting calls that may run now, in call order. */
  private pump(): void {
    if (this.runningAlone) return;
    const blockedSeqs = new Set<number>();
    for (let i = 0; i < this.waiting.length; ) {
      const w = this.waiting[i]!;
      if (w.seq === undefined) {
        // alone: when nothing runs; nothing after it starts before it
        if (i === 0 && this.runningShared === 0) {
          this.waiting.splice(i, 1);
          w.start();
        }
        return;
      }
      if (!this.runningSeqs.has(w.seq) && !blockedSeqs.has(w.seq)) {
        this.waiting.splice(i, 1);
        w.start();
        continue;
      }
      blockedSeqs.add(w.seq);
      i++;
    }
  }

  /** The sequences a call runs or waits on. */
  private claimedSeqs(): Set<number> {
    const claimed = new Set(this.runningSeqs);
    for (const w of this.waiting) if (w.seq !== undefined) claimed.add(w.seq);
    return claimed;
  }

  /**
   * Forgets the cached tokens of every sequence but `keep` that no call runs or waits on (to
   * make room for a generation that waits for cells); true when it freed any.
   */
  async forgetIdle(keep: number): Promise<boolean> {
    const claimed = this.claimedSeqs();
    let freed = false;
    for (const [seq, toks] of [...this.cached]) {
      if (seq === keep || claimed.has(seq) || toks.length === 0) continue;
      await this.forget(seq);
      freed = true;
    }
    return freed;
  }

  /**
   * A sequence for a generation that names none: a free one (no call running or waiting on it)
   * whose cache shares the longest prefix (beyond the leading </s>) with `prompt`, else an empty
   * one, else the one used least recently. Sequence 0 (the default of calls that name none) is
   * left to them.
   */
  pickSequence(prompt: readonly number[]): number {
    const claimed = this.claimedSeqs();
    let best = -1;
    let bestShared = 1;
    let empty = -1;
    let oldest = -1;
    let oldestUse = Infinity;
    for (let seq = 1; seq < MAX_SEQUENCES; seq++) {
      if (claimed.has(seq)) continue;
      const have = this.cached.get(seq);
      if (!have || have.length === 0) {
        if (empty < 0) empty = seq;
        continue;
      }
      let k = 0;
      while (k < have.length && k < prompt.length && have[k] === prompt[k]) k++;
      if (k > bestShared) {
        best = seq;
        bestShared = k;
      }
      const use = this.lastUse.get(seq) ?? 0;
      if (use < oldestUse) {
        oldest = seq;
        oldestUse = use;
      }
    }
    if (best >= 0) return best;
    if (empty >= 0) return empty;
    if (oldest >= 0) return oldest;
    // every sequence is busy: queue behind the one used longest ago
    let seq = 1;
    for (let s = 1; s < MAX_SEQUENCES; s++) if ((this.lastUse.get(s) ?? 0) < (this.lastUse.get(seq) ?? 0)) seq = s;
    return seq;
  }

  /**
   * Evaluates items in order, in native calls of at most batchSize tokens and
   * outputsPerBatch logits rows, and returns the log-probabilities asked for.
   * The cached-token bookkeeping follows every call, also one that fails midway.
   */
  async evaluateItems(
    items: readonly EvalItem[],
    topK: number,
    signal: AbortSignal,
    onProgress?: (done: number, total: number) => void,
  ): Promise<EvalOutput> {
    const engine = this.engine();
    const out: EvalOutput = { logprobs: new Float64Array(items.length).fill(NaN), top: new Array(items.length), lastBatchIndex: -1 };
    const wantsRow = (it: EvalItem) => it.logits === true || it.target !== undefined || it.top === true;
    let start = 0;
    while (start < items.length) {
      if (signal.aborted) throw new XglmError('ERR_XGLM_ABORTED', 'evaluation aborted');
      // the next chunk: up to batchSize tokens, up to outputsPerBatch rows with outputs
      let end = start;
      let rows = 0;
      while (end < items.length && end - start < this.batchSize) {
        const it = items[end]!;
        const wants = wantsRow(it);
        if (wants && rows === this.outputsPerBatch) break;
        if (wants) rows++;
        end++;
      }
      const chunk = items.slice(start, end);
      const flags = chunk.map(wantsRow);
      try {
        await engine.evaluate(
          { tokens: chunk.map((it) => it.token), positions: chunk.map((it) => it.pos), seqIds: chunk.map((it) => it.seq), logits: flags },
          { signal },
        );
      } catch (err) {
        await this.resync(new Set(chunk.map((it) => it.seq)));
        throw err;
      }
      this.stats.evaluations++;
      this.stats.evaluatedTokens += chunk.length;
      this.stats.logitsRows += rows;
      for (const it of chunk) {
        const toks = this.cached.get(it.seq) ?? [];
        toks[it.pos] = it.token;
        this.cached.set(it.seq, toks);
      }
      out.lastBatchIndex = chunk.length - 1;
      const k = topK > 0 && chunk.some((it) => it.top) ? topK : 0;
      if (k > 0 || chunk.some((it) => it.target !== undefined)) {
        const rowIdx: number[] = [];
        const targets: number[] = [];
        chunk.forEach((it, i) => {
          if (it.target !== undefined || (k > 0 && it.top)) {
            rowIdx.push(i);
            targets.push(it.target ?? -1);
          }
        });
        const r = await engine.logprobs(rowIdx, targets, k);
        rowIdx.forEach((ci, j) => {
          const item = chunk[ci]!;
          out.logprobs[start + ci] = item.target !== undefined ? r.logprobs[j]! : NaN;
          if (item.top && k > 0) {
            const pairs: Array<[number, number]> = [];
            for (let q = 0; q < k; q++) pairs.push([r.topIds[j * k + q]!, r.topLogprobs[j * k + q]!]);
            out.top[start + ci] = pairs;
          }
        });
      }
      start = end;
      onProgress?.(start, items.length);
    }
    return out;
  }

  /** After a failed or aborted evaluation: believe the cache, not the plan. */
  private async resync(seqs: Set<number>): Promise<void> {
    const engine = this.engineContext;
    for (const seq of seqs) {
      const max = engine ? await engine.kvSeqPosMax(seq).catch(() => -1) : -1;
      const toks = this.cached.get(seq) ?? [];
      toks.length = Math.min(toks.length, max + 1);
      this.cached.set(seq, toks);
    }
  }

  /**
   * Makes sequence `seq` hold exactly `tokens[0..keep)` where keep is the longest common
   * prefix with what it has cached; returns keep.
   */
  async reusePrefix(seq: number, tokens: readonly number[]): Promise<number> {
    const have = this.cached.get(seq) ?? [];
    let keep = 0;
    while (keep < have.length && keep < tokens.length && have[keep] === tokens[keep]) keep++;
    if (keep < have.length) {
      await this.engine().kvRemove(seq, keep, -1);
      have.length = keep;
      this.cached.set(seq, have);
    }
    return keep;
  }

  /**
   * Makes positions [0, length) of sequence `src` visible to `dst` (the KV cells are shared,
   * not copied; a prefix evaluated once). Only the KV cache changes: `dst`'s cached tokens are
   * not recorded, so callers forget `dst` when done with it.
   */
  sharePrefix(src: number, dst: number, length: number): Promise<void> {
    return this.engine().kvCopy(src, dst, 0, length);
  }

  /** Forgets sequence `seq` (all sequences when omitted). */
  async forget(seq?: number): Promise<void> {
    if (seq === undefined) {
      await this.engine().kvClear();
      this.cached.clear();
    } else {
      await this.engine().kvRemove(seq, 0, -1);
      this.cached.delete(seq);
    }
  }

  /**
   * A native generation stream (EngineContext.generate) with the cached-token bookkeeping:
   * `prompt` sits at loop.position - prompt.length …, the streamed tokens at loop.position,
   * loop.position + 1, … as far as they were evaluated.
   */
  async generateTokens(
    prompt: readonly number[],
    sampler: EngineSampler,
    loop: Omit<NativeGenerateOptions, 'streamId' | 'reserve' | 'waitForCells'> & { reserve?: number; waitForCells?: boolean },
    onToken: (token: number, computeMs: number) => boolean,
    signal: AbortSignal,
    onPromptProgress?: (evaluated: number) => void,
  ): Promise<{ steps: number; endPosition: number }> {
    const engine = this.engine();
    const seq = loop.seqId;
    const pos0 = loop.position - prompt.length;
    const streamed: number[] = [];
    const record = (end: number) => {
      const toks = this.cached.get(seq) ?? [];
      const promptEnd = Math.min(end, loop.position);
      for (let p = pos0; p < promptEnd; p++) toks[p] = prompt[p - pos0]!;
      for (let p = loop.position; p < end; p++) toks[p] = streamed[p - loop.position]!;
      this.cached.set(seq, toks);
      const evaluated = Math.max(0, end - pos0);
      const generated = Math.max(0, end - loop.position);
      this.stats.evaluations += generated + (evaluated > generated ? 1 : 0);
      this.stats.evaluatedTokens += evaluated;
      this.stats.logitsRows += generated + (end >= loop.position ? 1 : 0);
    };
    try {
      const r = await engine.generate(prompt, sampler, loop, (token, computeMs) => {
        streamed.push(token);
        return onToken(token, computeMs);
      }, { signal, ...(onPromptProgress ? { onPromptProgress } : {}) });
      record(r.endPosition);
      return r;
    } catch (err) {
      const max = await engine.kvSeqPosMax(seq).catch(() => -1);
      record(Math.min(max + 1, loop.position + streamed.length));
      await this.resync(new Set([seq]));
      throw err;
    }
  }

  /**
   * Frees the KV cache and the compute thread. Running work is aborted; calls queued after it
   * reject with ERR_XGLM_DISPOSED.
   */
  async dispose(): Promise<void> {
    const e = this.engineContext;
    if (!e) return;
    for (const c of this.controllers) c.abort();
    this.engineContext = undefined;
    this.cached.clear();
    this.onDispose();
    await e.dispose();
  }
}

const cores = new WeakMap<object, ContextCore>();

/** Binds a public facade (XglmContext) to the core it fronts. */
export function bindCore(facade: object, core: ContextCore): void {
  cores.set(facade, core);
}

/**
 * The core behind a public XglmContext: for tests that check the runtime's bookkeeping
 * against the KV cache. Not exported from the package.
 */
export function coreOf(facade: object): ContextCore {
  const core = cores.get(facade);
  if (!core) throw new TypeError('not a context');
  return core;
}

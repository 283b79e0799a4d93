/**
 * The generation loop: prefix reuse, prompt evaluation, sampling, streaming detokenization,
 * stop strings, abort — and the Generation object users iterate or await.
 */
import { randomInt } from 'node:crypto';
import { MAX_SEQUENCES } from './engine/checks.js';
import { XglmError } from './errors.js';
import type { ContextCore } from './runtime/core.js';
import { resolveSampler, type SamplerOptions } from './sampler.js';
import { StopStringMatcher } from './stop-strings.js';

/** What generate() takes: the sampler's options (src/sampler.ts, with their defaults) and these. */
export interface GenerateOptions extends SamplerOptions {
  /** Tokens to generate at most. @default until </s> or the end of the context */
  maxTokens?: number;
  /** Stop when one of these strings is generated; it is not part of the text (never emitted partly). */
  stop?: readonly string[];
  /** Aborts prompt processing and generation; the result then has finishReason 'abort'. */
  signal?: AbortSignal;
  /** Same seed and input → same output, in every process. @default random */
  seed?: number;
  /** Stop at </s> (id 2). @default true */
  stopAtEos?: boolean;
  /**
   * The KV-cache sequence to use. Generations on different sequences run concurrently, one
   * token of each per graph evaluation; calls on one sequence run in call order. `'auto'`
   * takes a free sequence (preferring one whose cache shares a prefix with the prompt; never
   * 0): `result.sequence` says which. @default 0
   */
  sequence?: number | 'auto';
  /**
   * When the prompt plus maxTokens do not fit in the KV cells left beside the generations
   * running on other sequences: `'error'` fails with ERR_XGLM_CONTEXT_OVERFLOW, `'wait'` waits
   * for them to end. A running generation never loses cells to one that starts later.
   * @default 'error'
   */
  whenContextFull?: 'error' | 'wait';
  /** Treat literal special-token strings in a text prompt as special tokens. @default false */
  specialTokens?: boolean;
  /** Called while the prompt is evaluated, after each batch: (tokens evaluated, tokens to evaluate). */
  onPromptProgress?: (evaluated: number, total: number) => void;
  /** Called with every generated token id. */
  onToken?: (token: number) => void;
  /** Called with every piece of text as it becomes final. */
  onText?: (text: string) => void;
}

export interface GenerationChunk {
  /** New text (may be empty while a character or a possible stop string is incomplete). */
  text: string;
  /** The token ids generated since the previous chunk. */
  tokens: number[];
}

export type FinishReason = 'eos' | 'length' | 'stop' | 'abort';

export interface GenerationResult {
  text: string;
  /** Generated token ids (the stop string's tokens included; </s> not). */
  tokens: number[];
  finishReason: FinishReason;
  /** The KV-cache sequence the generation used. */
  sequence: number;
  usage: {
    promptTokens: number;
    /** Prompt tokens taken from the KV cache instead of being evaluated. */
    cachedPromptTokens: number;
    completionTokens: number;
  };
  timings: {
    /** Time to evaluate the prompt. */
    promptMs: number;
    /** From the call to the first generated token. */
    timeToFirstTokenMs: number;
    /** Time spent generating after the first token. */
    generateMs: number;
    /** Of generateMs, the time inside ggml's graph computation (the rest is sampling, crossings, detokenization). */
    generateComputeMs: number;
    promptTokensPerSecond: number;
    tokensPerSecond: number;
  };
}

const EOS = 2;

/** A running generation: `for await (const chunk of gen)`, and/or `await gen` (or `gen.result`). */
export class Generation implements AsyncIterable<GenerationChunk>, PromiseLike<GenerationResult> {
  readonly result: Promise<GenerationResult>;
  private readonly chunks: GenerationChunk[] = [];
  private finished = false;
  private wake: (() => void) | undefined;
  private iterating = false;

  /** @internal */
  constructor(
    start: (emit: (chunk: GenerationChunk) => void) => Promise<GenerationResult>,
    private readonly stop: () => void = () => undefined,
  ) {
    this.result = start((chunk) => {
      this.chunks.push(chunk);
      this.wake?.();
    }).finally(() => {
      this.finished = true;
      this.wake?.();
    });
    // The result may be ignored by someone who only iterates; errors then surface there.
    this.result.catch(() => undefined);
  }

  then<A = GenerationResult, B = never>(
    onfulfilled?: ((value: GenerationResult) => A | PromiseLike<A>) | null,
    onrejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    return this.result.then(onfulfilled, onrejected);
  }

  catch<B = never>(onrejected?: ((reason: unknown) => B | PromiseLike<B>) | null): Promise<GenerationResult | B> {
    return this.result.catch(onrejected);
  }

  finally(onfinally?: (() => void) | null): Promise<GenerationResult> {
    return this.result.finally(onfinally);
  }

  /**
   * Ends this generation alone (the others on the context run on): the result resolves with
   * finishReason 'abort' and the text so far.
   */
  abort(): void {
    this.stop();
  }

  /** Aborts the generation and waits for it to end (`await using gen = ctx.generate(…)`). */
  async [Symbol.asyncDispose](): Promise<void> {
    this.stop();
    await this.result.catch(() => undefined);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<GenerationChunk> {
    if (this.iterating) throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', 'a Generation can be iterated once');
    this.iterating = true;
    for (;;) {
      const next = this.chunks.shift();
      if (next) {
        yield next;
        continue;
      }
      if (this.finished) {
        await this.result; // rethrows a failure
        return;
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
  }
}

function checkInt(name: string, v: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `${name} must be an integer from ${min}${max < Number.MAX_SAFE_INTEGER ? ` to ${max}` : ''}, got ${String(v)}`);
  }
  return v;
}

/** XglmContext.generate, on the context's core: validates synchronously, then queues the run. @internal */
export function runGeneration(core: ContextCore, prompt: string | readonly number[], options: GenerateOptions): Generation {
  // Validate synchronously: a bad option throws at the call, not later.
  const tokenizer = core.model.tokenizer;
  let promptIds: number[];
  if (typeof prompt === 'string') promptIds = tokenizer.encode(prompt, { specialTokens: options.specialTokens ?? false });
  else if (Array.isArray(prompt) || ArrayBuffer.isView(prompt)) {
    promptIds = Array.from(prompt, (id, i) => {
      checkInt(`prompt[${i}]`, id, 0, core.model.info.hparams.nVocab - 1);
      return id;
    });
  } else throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', 'prompt must be a string or an array of token ids');
  if (promptIds.length === 0) promptIds = [EOS];
  const seq = options.sequence === 'auto' ? core.pickSequence(promptIds) : checkInt('sequence', options.sequence ?? 0, 0, MAX_SEQUENCES - 1);
  const whenFull = options.whenContextFull ?? 'error';
  if (whenFull !== 'error' && whenFull !== 'wait') {
    throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `whenContextFull must be 'error' or 'wait', got ${String(whenFull)}`);
  }
  const limit = core.contextSize;
  const maxTokens = options.maxTokens === undefined ? Infinity : checkInt('maxTokens', options.maxTokens, 0);
  const stops = options.stop ?? [];
  if (!Array.isArray(stops) || stops.some((s) => typeof s !== 'string')) {
    throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', 'stop must be an array of strings');
  }
  // Every knob set (the engine layer checks the values); the window is applied here.
  const { penaltyWindow: windowOption, ...sampler } = resolveSampler(options);
  const penaltyWindow = checkInt('penaltyWindow', windowOption, 0);
  const seed = options.seed === undefined ? randomInt(2 ** 47) : checkInt('seed', options.seed, 0);
  const stopAtEos = options.stopAtEos ?? true;
  const usesPenalties = sampler.repeatPenalty !== 1 || sampler.presencePenalty !== 0 || sampler.frequencyPenalty !== 0;

  const overflow = core.contextOverflow;
  if (overflow === 'error') {
    const need = promptIds.length + (Number.isFinite(maxTokens) ? maxTokens : 0);
    if (promptIds.length > limit || need > limit) {
      throw new XglmError(
        'ERR_XGLM_CONTEXT_OVERFLOW',
        `the prompt (${promptIds.length} tokens)${Number.isFinite(maxTokens) ? ` plus maxTokens (${maxTokens})` : ''} does not fit the context of ${limit} tokens`,
        { hint: "shorten the prompt, lower maxTokens, or create the context with contextOverflow: 'truncate-left'" },
      );
    }
  }
  // options.signal or Generation.abort()
  // (its listener on options.signal goes when the generation ends: one signal may serve many)
  const own = new AbortController();
  const outer = options.signal;
  const forward = () => own.abort();
  if (outer?.aborted) own.abort();
  else outer?.addEventListener('abort', forward, { once: true });
  const signal = own.signal;

  return new Generation(async (emit) => {
    const t0 = performance.now();
    return core.enqueueOn(seq, async (sig) => {
      let ids = promptIds;
      if (ids.length > limit) ids = truncateLeft(ids, limit);
      // Reuse the cached common prefix; the last prompt token is always evaluated (its logits
      // give the first new token).
      const keep = await core.reusePrefix(seq, ids.slice(0, -1));
      const generated: number[] = [];
      const decoder = tokenizer.createStreamDecoder();
      const matcher = new StopStringMatcher(stops);
      let text = '';
      let finishReason = 'length' as FinishReason; // set in onToken too: no narrowing
      let promptMs = 0;
      let firstTokenAt = 0;
      let computeAtFirstToken = 0;
      const history = ids.slice();
      let pending: number[] = [];

      const flushText = (piece: string, final: boolean) => {
        const r = matcher.push(piece);
        let out = r.emit;
        if (final && !r.stop) out += matcher.flush();
        if (out) {
          text += out;
          options.onText?.(out);
        }
        if (out || pending.length) {
          emit({ text: out, tokens: pending });
          pending = [];
        }
        return r.stop !== undefined;
      };

      try {
        let pos = ids.length;
        let step = 0;
        let done = maxTokens === 0;
        let callbackError: unknown;
        // the prompt's tokens after the reused prefix; the native stream evaluates them (in
        // chunks, beside the other streams' tokens) and then generates
        let prompt = ids.slice(keep);
        const total = prompt.length;
        const onProgress = options.onPromptProgress
          ? (n: number) => {
              try {
                options.onPromptProgress!(n, total);
              } catch (err) {
                callbackError ??= err;
              }
            }
          : undefined;
        if (done) {
          // nothing to draw: evaluate the prompt only
          await core.evaluateItems(prompt.map((token, i) => ({ token, pos: keep + i, seq })), 0, sig, options.onPromptProgress);
        }
        promptMs = performance.now() - t0;
        // Runs on the JS thread for every token the native loop streams; true stops the loop
        // (before its next evaluation). The loop itself never waits for this.
        const onToken = (token: number, computeMs: number): boolean => {
          if (done) return true;
          if (sig.aborted) {
            finishReason = 'abort';
            return (done = true);
          }
          try {
            if (step === 0) {
              firstTokenAt = performance.now();
              promptMs = firstTokenAt - t0;
              computeAtFirstToken = computeMs;
            }
            step++;
            if (token < 0 || (token === EOS && stopAtEos)) {
              finishReason = 'eos';
              return (done = true);
            }
            generated.push(token);
            history.push(token);
            pending.push(token);
            options.onToken?.(token);
            if (flushText(decoder.push(token), false)) {
              finishReason = 'stop';
              return (done = true);
            }
            if (step >= maxTokens) done = true; // finishReason 'length'
            return done;
          } catch (err) {
            callbackError = err;
            return (done = true);
          }
        };
        while (!done) {
          if (sig.aborted) {
            finishReason = 'abort';
            break;
          }
          const window = usesPenalties ? penaltyWindow : 0;
          const left = maxTokens - step;
          const stream = () => core.generateTokens(
            prompt,
            window > 0 ? { ...sampler, penaltyTokens: history.slice(-window) } : sampler,
            {
              position: pos,
              seqId: seq,
              seed,
              firstStep: step,
              maxSteps: left,
              positionLimit: limit,
              eosToken: stopAtEos ? EOS : -1,
              penaltyWindow: window,
              reserve: Number.isFinite(left) ? Math.min(left, limit - pos) : 0,
              waitForCells: whenFull === 'wait',
            },
            onToken,
            sig,
            onProgress,
          );
          try {
            await stream();
          } catch (err) {
            // waiting for cells: the running streams ended and the cells are still short; the
            // idle sequences' caches make room
            if ((err as XglmError).code !== 'ERR_XGLM_CONTEXT_OVERFLOW' || whenFull !== 'wait' || step > 0 || !(await core.forgetIdle(seq))) throw err;
            await stream();
          }
          if (callbackError !== undefined) throw callbackError;
          if (sig.aborted && !done) finishReason = 'abort';
          if (done || sig.aborted) break;
          // The loop stopped by itself: the context is full.
          if (overflow === 'error') break; // finishReason 'length'
          const kept = truncateLeft(history, Math.max(2, Math.floor(limit / 2)));
          await core.forget(seq);
          prompt = kept;
          pos = kept.length;
        }
        if (callbackError !== undefined) throw callbackError;
      } catch (err) {
        if ((err as XglmError).code === 'ERR_XGLM_ABORTED' || (sig.aborted && (err as XglmError).code === 'ERR_XGLM_DISPOSED')) finishReason = 'abort';
        else throw err;
      }
      if (finishReason !== 'stop') flushText(decoder.flush(), true);
      const now = performance.now();
      const genMs = firstTokenAt ? now - firstTokenAt : 0;
      const genComputeMs = firstTokenAt && !core.disposed ? core.engine().info.computeMs - computeAtFirstToken : 0;
      return {
        text,
        tokens: generated,
        finishReason,
        sequence: seq,
        usage: { promptTokens: ids.length, cachedPromptTokens: keep, completionTokens: generated.length },
        timings: {
          promptMs,
          timeToFirstTokenMs: firstTokenAt ? firstTokenAt - t0 : 0,
          generateMs: genMs,
          generateComputeMs: genComputeMs,
          promptTokensPerSecond: promptMs > 0 ? (ids.length - keep) / (promptMs / 1000) : 0,
          tokensPerSecond: genMs > 0 && generated.length > 1 ? (generated.length - 1) / (genMs / 1000) : 0,
        },
      };
    }, signal).finally(() => outer?.removeEventListener('abort', forward));
  }, () => own.abort());
}

/** The leading </s> and the last (n - 1) tokens. */
function truncateLeft(ids: readonly number[], n: number): number[] {
  if (ids.length <= n) return ids.slice();
  return [ids[0]!, ...ids.slice(ids.length - (n - 1))];
}

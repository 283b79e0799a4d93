/**
 * Scoring, XGLM's main use in its paper: total log-probabilities of texts, candidate
 * continuations that share a prefix (evaluated once), per-position log-probabilities with
 * top-k, and sliding-window perplexity. Log-softmax and top-k run natively; only the
 * numbers asked for cross to JS.
 */
import { MAX_SEQUENCES } from './engine/checks.js';
import { XglmError } from './errors.js';
import type { ContextCore, EvalItem } from './runtime/core.js';

export interface ScoreOptions {
  signal?: AbortSignal;
  /** Also return each token's log-probability. @default false */
  tokenLogprobs?: boolean;
}

export interface ScoreResult {
  /** Sum of log P(token | tokens before it) over every token after the leading </s>. */
  logprob: number;
  /** How many tokens were scored (the text's token count minus the leading </s>). */
  tokens: number;
  /** With tokenLogprobs: log P(ids[i+1] | ids[0..i]). */
  tokenLogprobs?: number[];
}

export interface ContinuationOptions extends ScoreOptions {
  /**
   * Score the prefix's tokens too (what `logprob`, the full text's total, needs). `false` scores
   * only each continuation's tokens: enough to choose between continuations — the prefix's
   * log-probabilities are the same for every candidate, so the XGLM model card's COPA decision
   * (the larger full-text total) is the larger `continuationLogprob` — and the prefix is then
   * evaluated without computing its logits rows (the n_vocab-wide product per token), about
   * twice as fast on COPA-shaped items. `logprob` is then NaN, and `tokenLogprobs` NaN at the
   * prefix's positions.
   * @default true
   */
  scorePrefix?: boolean;
}

export interface ContinuationScore extends ScoreResult {
  /** Sum over the tokens after the prefix's own encoding (when it is a token prefix of the full text). */
  continuationLogprob: number;
  /** Tokens of the prefix's own encoding that begin the full text (leading </s> included). */
  prefixTokens: number;
}

export interface LogprobsOptions {
  /** Alternatives per position. @default 5 */
  top?: number;
  signal?: AbortSignal;
}

export interface LogprobsResult {
  ids: number[];
  /** log P(ids[i+1] | ids[0..i]); one fewer than ids. */
  logprobs: number[];
  /** Per input position (the last is the next-token prediction): [id, logprob], most likely first. */
  top: Array<Array<[number, number]>>;
}

export interface PerplexityOptions {
  /** Tokens per window (the leading </s> included). @default the context size */
  window?: number;
  /** Tokens the window advances by; each token is scored once, with up to window - stride tokens of context. @default window / 2 */
  stride?: number;
  signal?: AbortSignal;
  /** Called after each window with (tokens scored, tokens total). */
  onProgress?: (done: number, total: number) => void;
}

export interface PerplexityResult {
  perplexity: number;
  /** Mean negative log-likelihood (nats per token). */
  nll: number;
  tokens: number;
  windows: number;
}

function checkTexts(texts: unknown, what: string): asserts texts is string[] {
  if (!Array.isArray(texts) || texts.some((t) => typeof t !== 'string')) {
    throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `${what} must be an array of strings`);
  }
}

function checkFits(core: ContextCore, ids: readonly number[], what: string): void {
  if (ids.length > core.contextSize) {
    throw new XglmError('ERR_XGLM_CONTEXT_OVERFLOW', `${what} has ${ids.length} tokens, more than the context's ${core.contextSize}`, {
      hint: 'shorten it, or create a context with a larger contextSize (at most the model context length)',
    });
  }
}

/** Items that score `ids[from+1..]` in sequence `seq`, the first at position `from`. */
function scoringItems(ids: readonly number[], from: number, seq: number, top = false): EvalItem[] {
  const items: EvalItem[] = [];
  for (let i = from; i < ids.length; i++) {
    const item: EvalItem = { token: ids[i]!, pos: i, seq };
    if (i + 1 < ids.length) item.target = ids[i + 1]!;
    if (top) item.top = true;
    items.push(item);
  }
  return items;
}

function sum(values: ArrayLike<number>, from = 0, to = values.length): number {
  let s = 0;
  for (let i = from; i < to; i++) s += values[i]!;
  return s;
}

/** Groups of consecutive entries whose cells fit `budget` and whose count fits `maxCount`. */
function pack(sizes: readonly number[], budget: number, maxCount: number): number[][] {
  const groups: number[][] = [];
  let cur: number[] = [];
  let used = 0;
  sizes.forEach((size, i) => {
    if (cur.length > 0 && (used + size > budget || cur.length === maxCount)) {
      groups.push(cur);
      cur = [];
      used = 0;
    }
    cur.push(i);
    used += size;
  });
  if (cur.length > 0) groups.push(cur);
  return groups;
}

/** XglmContext.score, run on the context's core (queued by the caller). @internal */
export async function scoreTexts(core: ContextCore, texts: readonly string[], options: ScoreOptions, signal: AbortSignal): Promise<ScoreResult[]> {
  checkTexts(texts, 'texts');
  const all = texts.map((t) => core.model.tokenizer.encode(t));
  all.forEach((ids, i) => checkFits(core, ids, `texts[${i}]`));
  const results: ScoreResult[] = new Array(texts.length);
  await core.forget();
  // Several texts per batch, one sequence each: fewer, fuller native calls.
  for (const group of pack(all.map((ids) => ids.length), core.contextSize, MAX_SEQUENCES)) {
    const items: EvalItem[] = [];
    const spans: Array<[number, number]> = [];
    group.forEach((t, s) => {
      const its = scoringItems(all[t]!, 0, s);
      spans.push([items.length, items.length + its.length]);
      items.push(...its);
    });
    const out = await core.evaluateItems(items, 0, signal);
    group.forEach((t, s) => {
      const [a, b] = spans[s]!;
      const lps = Array.from(out.logprobs.subarray(a, b - 1));
      results[t] = { logprob: sum(lps), tokens: lps.length, ...(options.tokenLogprobs ? { tokenLogprobs: lps } : {}) };
    });
    await core.forget();
  }
  return results;
}

/** XglmContext.scoreContinuations on the core. @internal */
export async function scoreContinuationsOf(
  core: ContextCore,
  prefix: string,
  continuations: readonly string[],
  options: ContinuationOptions,
  signal: AbortSignal,
): Promise<ContinuationScore[]> {
  if (typeof prefix !== 'string') throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', 'prefix must be a string');
  checkTexts(continuations, 'continuations');
  if (continuations.length === 0) return [];
  const tok = core.model.tokenizer;
  const full = continuations.map((c) => tok.encode(prefix + c));
  full.forEach((ids, i) => checkFits(core, ids, `prefix + continuations[${i}]`));
  const prefixIds = tok.encode(prefix);
  // The token prefix all full texts share; its last token is evaluated per candidate,
  // because the row after it predicts each candidate's own next token.
  let common = full[0]!.length;
  for (const ids of full) {
    let k = 0;
    while (k < common && k < ids.length && ids[k] === full[0]![k]) k++;
    common = k;
  }
  const shared = Math.max(0, common - 1);
  const scorePrefix = options.scorePrefix ?? true;
  if (typeof scorePrefix !== 'boolean') throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', 'scorePrefix must be a boolean');
  const prefixIsTokenPrefix = (ids: readonly number[]) => prefixIds.length <= ids.length && prefixIds.every((id, i) => ids[i] === id);
  // Without prefix scores, rows start where the earliest candidate's continuation does.
  const firstScored = scorePrefix ? 0 : Math.min(...full.map((ids) => (prefixIsTokenPrefix(ids) ? prefixIds.length : common) - 1));
  await core.forget();
  const sharedItems = scoringItems(full[0]!.slice(0, shared + 1), 0, 0).slice(0, shared);
  for (const it of sharedItems) if (it.pos < firstScored) delete it.target;
  const sharedOut = sharedItems.length ? await core.evaluateItems(sharedItems, 0, signal) : undefined;
  const sharedLogprobs = sharedOut ? Array.from(sharedOut.logprobs) : [];

  const results: ContinuationScore[] = new Array(continuations.length);
  const rest = full.map((ids) => ids.length - shared);
  for (const group of pack(rest, core.contextSize - shared, MAX_SEQUENCES - 1)) {
    const items: EvalItem[] = [];
    const spans: Array<[number, number]> = [];
    for (let s = 0; s < group.length; s++) {
      if (shared > 0) await core.sharePrefix(0, s + 1, shared);
      const its = scoringItems(full[group[s]!]!, shared, s + 1);
      spans.push([items.length, items.length + its.length]);
      items.push(...its);
    }
    const out = await core.evaluateItems(items, 0, signal);
    group.forEach((c, s) => {
      const ids = full[c]!;
      const [a, b] = spans[s]!;
      const lps = [...sharedLogprobs, ...Array.from(out.logprobs.subarray(a, b - 1))];
      const prefixTokens = prefixIsTokenPrefix(ids) ? prefixIds.length : common;
      results[c] = {
        logprob: scorePrefix ? sum(lps) : NaN,
        tokens: lps.length,
        continuationLogprob: sum(lps, prefixTokens - 1),
        prefixTokens,
        ...(options.tokenLogprobs ? { tokenLogprobs: lps } : {}),
      };
    });
    for (let s = 0; s < group.length; s++) await core.forget(s + 1);
  }
  await core.forget();
  return results;
}

/** XglmContext.logprobs on the core. @internal */
export async function logprobsOf(
  core: ContextCore,
  text: string | readonly number[],
  options: LogprobsOptions,
  signal: AbortSignal,
): Promise<LogprobsResult> {
  const top = options.top ?? 5;
  if (!Number.isInteger(top) || top < 0 || top > 1000) throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `top must be an integer from 0 to 1000, got ${String(top)}`);
  let ids: number[];
  if (typeof text === 'string') ids = core.model.tokenizer.encode(text);
  else if (Array.isArray(text) || ArrayBuffer.isView(text)) {
    ids = Array.from(text);
    ids.forEach((id) => core.model.tokenizer.checkId(id));
  } else throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', 'text must be a string or an array of token ids');
  if (ids.length === 0) throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', 'no tokens to score');
  checkFits(core, ids, 'the text');
  await core.forget();
  const out = await core.evaluateItems(scoringItems(ids, 0, 0, top > 0), top, signal);
  await core.forget();
  return {
    ids,
    logprobs: Array.from(out.logprobs.subarray(0, ids.length - 1)),
    top: ids.map((_, i) => out.top[i] ?? []),
  };
}

/** XglmContext.perplexity on the core. @internal */
export async function perplexityOf(core: ContextCore, text: string, options: PerplexityOptions, signal: AbortSignal): Promise<PerplexityResult> {
  if (typeof text !== 'string') throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', 'text must be a string');
  const window = options.window ?? core.contextSize;
  if (!Number.isInteger(window) || window < 2 || window > core.contextSize) {
    throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `window must be an integer from 2 to the context size ${core.contextSize}`);
  }
  const stride = options.stride ?? Math.max(1, Math.floor(window / 2));
  if (!Number.isInteger(stride) || stride < 1 || stride > window - 1) {
    throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `stride must be an integer from 1 to window - 1 (${window - 1})`);
  }
  const ids = core.model.tokenizer.encode(text);
  const total = ids.length - 1;
  if (total < 1) throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', 'the text has no tokens to score');
  let nllSum = 0;
  let scored = 0;
  let windows = 0;
  let prevEnd = 1; // ids[0] (</s>) is never predicted
  // Each window is </s> followed by ids[begin..end); it scores the tokens not scored before.
  for (let begin = 1; prevEnd < ids.length; begin += stride) {
    const end = Math.min(begin + window - 1, ids.length);
    const win = [ids[0]!, ...ids.slice(begin, end)];
    const firstScored = Math.max(prevEnd, begin); // index into ids
    await core.forget();
    const items = scoringItems(win, 0, 0);
    const out = await core.evaluateItems(items, 0, signal);
    // window row r predicts win[r+1] = ids[begin + r]
    for (let j = firstScored; j < end; j++) {
      nllSum -= out.logprobs[j - begin]!;
      scored++;
    }
    windows++;
    prevEnd = end;
    options.onProgress?.(scored, total);
  }
  await core.forget();
  const nll = nllSum / scored;
  return { perplexity: Math.exp(nll), nll, tokens: scored, windows };
}

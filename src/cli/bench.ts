/**
 * One speed measurement of a model file: load time, prompt (prefill) and generation
 * (decode) throughput, time to first token, peak RSS: what `xglm bench` runs (bench/ uses
 * benchPromptIds and peakRssMb too).
 */
import fs from 'node:fs';
import { XglmError, loadModel, type ContextOptions } from '../index.js';

export interface BenchOptions extends Pick<ContextOptions, 'threads' | 'kvType'> {
  /** Prompt tokens for the prefill measurement. @default 512 */
  prompt?: number;
  /** Tokens to generate for the decode measurement. @default 128 */
  decode?: number;
  /** Prompt tokens for the time-to-first-token measurement. @default 64 */
  ttftPrompt?: number;
  /**
   * Context size in tokens. Default: just large enough for the prompt and for the
   * time-to-first-token prompt plus the generated tokens, at most the model's context length.
   */
  contextSize?: number;
  /**
   * Called with a one-line message when a measurement is shortened to fit the context
   * (a prompt longer than the context allows is clamped, not an error).
   */
  onNote?: (message: string) => void;
}

export interface BenchResult {
  load_ms: number;
  prefill_tps: number;
  decode_tps: number;
  ttft_ms: number;
  peak_rss_mb: number;
  threads: number;
  /** Tokens the measurements actually used (after clamping to the context). */
  prompt_tokens: number;
  gen_tokens: number;
  ttft_prompt_tokens: number;
  /** Context size of the measurement, in tokens. */
  context_size: number;
}

export interface BenchPlan {
  prompt: number;
  decode: number;
  ttftPrompt: number;
  contextSize: number;
  /** One line per measurement shortened to fit the context. */
  notes: string[];
}

/**
 * The token counts and the context size of one benchmark for a model of `contextLength`
 * positions. The prefill run evaluates `prompt` tokens and draws none; the decode run
 * evaluates `ttftPrompt` tokens and draws `decode + 1` (the first one is the
 * time-to-first-token measurement). Whatever does not fit the context is shortened, with a note.
 */
export function planBenchmark(contextLength: number, options: BenchOptions = {}): BenchPlan {
  const prompt = options.prompt ?? 512;
  const decode = options.decode ?? 128;
  const ttftPrompt = options.ttftPrompt ?? 64;
  for (const [name, v] of [['prompt', prompt], ['decode', decode], ['ttftPrompt', ttftPrompt]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `${name} must be a positive integer, got ${v}`);
  }
  const given = options.contextSize;
  if (given !== undefined && (!Number.isInteger(given) || given < 1)) {
    throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `contextSize must be a positive integer, got ${given}`);
  }
  const limit = Math.min(given ?? contextLength, contextLength);
  const where = given !== undefined && given < contextLength ? `the context size of ${limit} tokens` : `the model's context of ${limit} tokens`;
  if (limit < 2) throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `a benchmark needs a context of at least 2 tokens, got ${limit}`);
  const notes: string[] = [];
  const p = Math.min(prompt, limit);
  if (p < prompt) notes.push(`the prompt of ${prompt} tokens is longer than ${where}: prefill measured with ${p} tokens`);
  // ttft + decode + 1 positions: keep at least one prompt token.
  const d = Math.min(decode, limit - 2);
  if (d < decode) notes.push(`generating ${decode} tokens after a prompt does not fit ${where}: decode measured with ${d} tokens`);
  const tp = Math.min(ttftPrompt, limit - d - 1);
  if (tp < ttftPrompt) notes.push(`the first-token prompt of ${ttftPrompt} tokens plus ${d + 1} generated tokens does not fit ${where}: first token measured after ${tp} prompt tokens`);
  const contextSize = given !== undefined ? limit : Math.min(limit, Math.max(p, tp + d + 1));
  return { prompt: p, decode: d, ttftPrompt: tp, contextSize, notes };
}

/** Deterministic token ids spread over the vocabulary, starting with </s> (same as bench/peer-runner.mjs); another `salt`, other ids (bench/batched.ts: one set per stream). */
export function benchPromptIds(n: number, vocab: number, salt = 0): number[] {
  const ids = [2];
  let x = 12345 + salt * 7919;
  while (ids.length < n) {
    x = (x * 1103515245 + 12345) % 2147483648;
    ids.push(10 + (x % (vocab - 20)));
  }
  return ids;
}

export function peakRssMb(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]) / 1024;
  } catch {
    // not Linux
  }
  return process.resourceUsage().maxRSS / 1024;
}

export async function benchmarkModel(file: string, options: BenchOptions = {}): Promise<BenchResult> {
  const t0 = performance.now();
  const model = await loadModel(file);
  const loadMs = performance.now() - t0;
  try {
    const plan = planBenchmark(model.contextLength, options);
    for (const note of plan.notes) options.onNote?.(note);
    const vocab = model.info.hparams.nVocab;
    const ctxOptions = {
      contextSize: plan.contextSize,
      ...(options.threads ? { threads: options.threads } : {}),
      ...(options.kvType ? { kvType: options.kvType } : {}),
    };
    const ctx = await model.createContext(ctxOptions);
    try {
      // Prefill: evaluate the prompt, draw nothing (no logits row), as bench/ours-runner.ts does.
      const pre = await ctx.generate(benchPromptIds(plan.prompt, vocab), { maxTokens: 0 });
      await ctx.clear();
      const gen = await ctx.generate(benchPromptIds(plan.ttftPrompt, vocab), { maxTokens: plan.decode + 1, temperature: 0, stopAtEos: false });
      return {
        load_ms: loadMs,
        prefill_tps: pre.timings.promptTokensPerSecond,
        decode_tps: gen.timings.tokensPerSecond,
        ttft_ms: gen.timings.timeToFirstTokenMs,
        peak_rss_mb: peakRssMb(),
        threads: ctx.threads,
        prompt_tokens: plan.prompt,
        gen_tokens: plan.decode,
        ttft_prompt_tokens: plan.ttftPrompt,
        context_size: ctx.contextSize,
      };
    } finally {
      await ctx.dispose();
    }
  } finally {
    await model.dispose();
  }
}

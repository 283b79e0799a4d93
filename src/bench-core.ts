/**
 * One speed measurement of a model file: load time, prompt (prefill) and generation
 * (decode) throughput, time to first token, peak RSS. Shared by `xglm bench` and bench/.
 */
import fs from 'node:fs';
import { loadModel } from './model.js';
import type { NativeKvType } from './native.js';

export interface BenchOptions {
  /** Prompt tokens for the prefill measurement. @default 512 */
  prompt?: number;
  /** Tokens to generate for the decode measurement. @default 128 */
  decode?: number;
  /** Prompt tokens for the time-to-first-token measurement. @default 64 */
  ttftPrompt?: number;
  threads?: number;
  kvType?: NativeKvType;
}

export interface BenchResult {
  load_ms: number;
  prefill_tps: number;
  decode_tps: number;
  ttft_ms: number;
  peak_rss_mb: number;
  threads: number;
}

/** Deterministic token ids spread over the vocabulary, starting with </s> (same as bench/peer-runner.mjs). */
export function benchPromptIds(n: number, vocab: number): number[] {
  const ids = [2];
  let x = 12345;
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

/** How late a 1 ms interval timer on the JS thread fired while `work` ran. */
export interface TimerLag<T> {
  result: T;
  ticks: number;
  /** Lag in ms at a percentile (0..1). */
  percentile: (p: number) => number;
  maxMs: number;
}

export async function measureTimerLag<T>(work: () => Promise<T>): Promise<TimerLag<T>> {
  const lags: number[] = [];
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    lags.push(now - last - 1);
    last = now;
  }, 1);
  let result: T;
  try {
    result = await work();
  } finally {
    clearInterval(timer);
  }
  lags.sort((a, b) => a - b);
  return {
    result,
    ticks: lags.length,
    percentile: (p) => lags[Math.min(lags.length - 1, Math.floor(lags.length * p))] ?? 0,
    maxMs: lags[lags.length - 1] ?? 0,
  };
}

export async function benchmarkModel(file: string, options: BenchOptions = {}): Promise<BenchResult> {
  const prompt = options.prompt ?? 512;
  const decode = options.decode ?? 128;
  const ttftPrompt = options.ttftPrompt ?? 64;
  const t0 = performance.now();
  const model = await loadModel(file);
  const loadMs = performance.now() - t0;
  try {
    const vocab = model.info.hparams.nVocab;
    const size = Math.min(model.contextLength, Math.max(prompt, ttftPrompt + decode + 1));
    const ctxOptions = { contextSize: size, ...(options.threads ? { threads: options.threads } : {}), ...(options.kvType ? { kvType: options.kvType } : {}) };
    const ctx = await model.createContext(ctxOptions);
    try {
      const pre = await ctx.generate(benchPromptIds(Math.min(prompt, size), vocab), { maxTokens: 1, temperature: 0 });
      await ctx.clear();
      const gen = await ctx.generate(benchPromptIds(ttftPrompt, vocab), { maxTokens: decode + 1, temperature: 0, stopAtEos: false });
      return {
        load_ms: loadMs,
        prefill_tps: pre.timings.promptTokensPerSecond,
        decode_tps: gen.timings.tokensPerSecond,
        ttft_ms: gen.timings.timeToFirstTokenMs,
        peak_rss_mb: peakRssMb(),
        threads: ctx.threads,
      };
    } finally {
      await ctx.dispose();
    }
  } finally {
    await model.dispose();
  }
}

/**
 * What generation costs the JS thread and what it costs around ggml, on a full-size model:
 * a 1 ms interval timer runs during generation (its lag percentiles are reported), and the
 * share of decode wall time spent outside ggml's graph computation (sampling, JS↔native
 * crossings, detokenization, graph building).
 *
 *   node --import tsx bench/responsiveness.ts [model.gguf] [--threads N] [--tokens N]
 *
 * Default model: .bench-cache/xglm-564m-random-q4_0.gguf (made by `npm run bench`).
 */
import path from 'node:path';
import { measureTimerLag } from './timer-lag.js';
import { loadModel } from '../src/index.js';
import { packageRoot } from '../src/paths.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}

async function main(): Promise<void> {
  const file = process.argv[2] && !process.argv[2].startsWith('--') ? process.argv[2] : path.join(packageRoot, '.bench-cache', 'xglm-564m-random-q4_0.gguf');
  const threads = Number(arg('threads', '2'));
  const tokens = Number(arg('tokens', '128'));
  const model = await loadModel(file);
  const ctx = await model.createContext({ contextSize: 512, threads });
  await ctx.generate('warm up', { maxTokens: 4, temperature: 0 });
  const lag = await measureTimerLag(() =>
    ctx.generate('The first sentence of a long story is', { maxTokens: tokens, temperature: 0.8, seed: 1, stopAtEos: false }).result,
  );
  const r = lag.result;
  const t = r.timings;
  const out = {
    model: path.basename(file),
    threads,
    tokens: r.tokens.length,
    decode_tps: t.tokensPerSecond,
    overhead_pct: (100 * (t.generateMs - t.generateComputeMs)) / t.generateMs,
    overhead_ms_per_token: (t.generateMs - t.generateComputeMs) / Math.max(1, r.tokens.length - 1),
    timer_ticks: lag.ticks,
    lag_p50_ms: lag.percentile(0.5),
    lag_p99_ms: lag.percentile(0.99),
    lag_max_ms: lag.maxMs,
  };
  process.stdout.write(JSON.stringify(out) + '\n');
  await model.dispose();
}

main().catch((err) => {
  process.stderr.write(`responsiveness: ${(err as Error).message}\n`);
  process.exit(1);
});

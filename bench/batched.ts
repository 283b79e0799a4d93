/**
 * Concurrent generations on one context (continuous batching): aggregate and per-stream
 * decode tokens/s for N sequences, and the time to first token of a request that arrives
 * while N - 1 others decode, against the same request on an idle context.
 *
 *   node --import tsx bench/batched.ts [--model FILE] [--seqs 1,2,4,8,16] [--prompt 64] [--tokens 128] [--threads 2] [--runs 1]
 *
 * The model defaults to the 564M-shape random-weight q4_0 file `npm run bench` caches
 * (.bench-cache/xglm-564m-random-q4_0.gguf). Prompts are distinct random token ids (no shared
 * prefix), generation is greedy without </s>, so every stream makes exactly --tokens tokens.
 * With --peer DIR (a folder where node-llama-cpp is installed, e.g. .bench-cache/peer) and
 * --peer-model FILE (the GPT-2-architecture twin), bench/peer-batched.mjs measures the same
 * with node-llama-cpp's LlamaContext of N sequences.
 * Prints one JSON line per N.
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadModel } from '../src/index.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: path.join(__dirname, '..', '.bench-cache', 'xglm-564m-random-q4_0.gguf') },
    seqs: { type: 'string', default: '1,2,4,8,16' },
    prompt: { type: 'string', default: '64' },
    tokens: { type: 'string', default: '128' },
    threads: { type: 'string', default: '2' },
    runs: { type: 'string', default: '1' },
    peer: { type: 'string' },
    'peer-model': { type: 'string' },
  },
});
const seqCounts = values.seqs.split(',').map(Number);
const promptLen = Number(values.prompt);
const tokens = Number(values.tokens);
const threads = Number(values.threads);

/** Distinct random ids per stream, the same as bench/peer-batched.mjs. */
function promptTokens(n: number, vocab: number, salt: number): number[] {
  const ids = [2];
  let x = 12345 + salt * 7919;
  while (ids.length < n) {
    x = (x * 1103515245 + 12345) % 2147483648;
    ids.push(10 + (x % (vocab - 20)));
  }
  return ids;
}

const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;

async function main(): Promise<void> {
  const model = await loadModel(values.model);
  const vocab = model.info.hparams.nVocab;
  const opts = { maxTokens: tokens, temperature: 0, stopAtEos: false } as const;

  for (const n of seqCounts) {
    for (let run = 0; run < Number(values.runs); run++) {
      await using ctx = await model.createContext({ contextSize: (n + 1) * (promptLen + tokens) + 64, threads });
      await ctx.generate(promptTokens(16, vocab, 999), { maxTokens: 2, sequence: 63 }); // touches the weights

      // idle time to first token
      const idle = await ctx.generate(promptTokens(promptLen, vocab, 500), { ...opts, maxTokens: 1, sequence: 62 });
      const idleTtft = idle.timings.timeToFirstTokenMs;

      // n concurrent streams
      const first: number[] = [];
      const stamps: number[][] = [];
      const t0 = performance.now();
      const gens = Array.from({ length: n }, (_, i) => {
        stamps[i] = [];
        return ctx.generate(promptTokens(promptLen, vocab, i), {
          ...opts,
          sequence: i,
          onToken: () => stamps[i]!.push(performance.now()),
        });
      });
      // a request arriving while the others decode: when each stream has 16 tokens
      let lateTtft = NaN;
      const late = (async () => {
        if (n < 2) return;
        while (stamps.slice(0, n - 1).some((s) => s.length < 16)) await new Promise((r) => setTimeout(r, 1));
        const r = await ctx.generate(promptTokens(promptLen, vocab, 400), { ...opts, maxTokens: 4, sequence: 61 });
        lateTtft = r.timings.timeToFirstTokenMs;
      })();
      const results = await Promise.all(gens);
      await late;
      const t1 = performance.now();
      for (const s of stamps) first.push(s[0]!);
      // decode: the tokens after every stream has its first one, over that time
      const allStarted = Math.max(...first);
      const end = Math.max(...stamps.map((s) => s[s.length - 1]!));
      const after = stamps.reduce((k, s) => k + s.filter((x) => x > allStarted).length, 0);
      const perStream = results.map((r) => r.timings.tokensPerSecond);
      console.log(
        JSON.stringify({
          engine: 'xglm-node',
          sequences: n,
          aggregate_decode_tps: +(after / ((end - allStarted) / 1000)).toFixed(2),
          aggregate_total_tps: +((n * tokens) / ((t1 - t0) / 1000)).toFixed(2),
          per_stream_tps_median: +median(perStream).toFixed(2),
          ttft_idle_ms: +idleTtft.toFixed(1),
          ttft_while_decoding_ms: Number.isNaN(lateTtft) ? null : +lateTtft.toFixed(1),
          wall_ms: +(t1 - t0).toFixed(0),
        }),
      );
    }
  }
  model.dispose();

  if (values.peer && values['peer-model']) {
    const runner = path.join(__dirname, 'peer-batched.mjs');
    execFileSync(process.execPath, [runner, JSON.stringify({ modelPath: values['peer-model'], seqs: seqCounts, prompt: promptLen, tokens, threads, vocab, runs: Number(values.runs) })], {
      cwd: values.peer,
      stdio: 'inherit',
    });
  }
}

void main();

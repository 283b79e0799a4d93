/**
 * Concurrent generations on one context (continuous batching): aggregate and per-stream
 * decode tokens/s for N sequences, and the time to first token of a request that arrives
 * while N - 1 others decode, against the same request on an idle context.
 *
 *   npm run bench:batched -- [--model FILE] [--seqs 1,2,4,8,16] [--prompt 64] [--tokens 128] [--threads 2] [--runs 1]
 *
 * The model defaults to the 564M-shape random-weight q4_0 file `npm run bench` caches
 * (.bench-cache/xglm-564m-random-q4_0.gguf). Prompts are distinct random token ids (no shared
 * prefix), generation is greedy without </s>, so every stream makes exactly --tokens tokens.
 * With --peer DIR (a folder where node-llama-cpp is installed, e.g. .bench-cache/peer, as
 * `npm run bench` installs it) and --peer-model FILE (the GPT-2-architecture twin,
 * .bench-cache/gpt2-564m-random-q4_0.gguf), bench/peer-batched.mjs measures the same with
 * node-llama-cpp's LlamaContext of N sequences: for each N and run, ours and the peer's
 * alternate, each in its own process (on a shared machine only alternating runs compare).
 * Prints one JSON line per N and run.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { benchPromptIds } from '../src/cli/bench.js';
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
    child: { type: 'boolean', default: false },
  },
});
const seqCounts = values.seqs.split(',').map(Number);
const promptLen = Number(values.prompt);
const tokens = Number(values.tokens);
const threads = Number(values.threads);

/** Distinct random ids per stream (bench/peer-batched.mjs gets the same ids, peerPrompts). */
const promptTokens = benchPromptIds;

/** The prompts of one N by salt, for the peer (its runner cannot import this file). */
function peerPrompts(n: number, vocab = 256008): Record<number, number[]> {
  const salts = [500, 400, ...Array.from({ length: n }, (_, i) => i), ...Array.from({ length: n }, (_, i) => 100 + i)];
  return { 999: promptTokens(16, vocab, 999), ...Object.fromEntries(salts.map((s) => [s, promptTokens(promptLen, vocab, s)])) };
}

const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;

async function main(): Promise<void> {
  if (values.peer && values['peer-model'] && !values.child) {
    // alternate processes: ours, then the peer's, per N and run
    const runner = path.resolve(values.peer, 'peer-batched.mjs');
    fs.copyFileSync(path.join(__dirname, 'peer-batched.mjs'), runner);
    for (const n of seqCounts) {
      for (let run = 0; run < Number(values.runs); run++) {
        const common = ['--seqs', String(n), '--prompt', values.prompt, '--tokens', values.tokens, '--threads', values.threads];
        execFileSync(process.execPath, ['--import', 'tsx', __filename, '--child', '--model', values.model, ...common], { stdio: 'inherit' });
        execFileSync(
          process.execPath,
          [runner, JSON.stringify({ modelPath: path.resolve(values['peer-model']), seqs: [n], prompt: promptLen, tokens, threads, vocab: 256008, runs: 1, prompts: peerPrompts(n) })],
          { cwd: values.peer, stdio: 'inherit' },
        );
      }
    }
    return;
  }
  await measureOurs();
}

async function measureOurs(): Promise<void> {
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

      // throughput: n streams started together
      const stamps: number[][] = [];
      const t0 = performance.now();
      const results = await Promise.all(
        Array.from({ length: n }, (_, i) => {
          stamps[i] = [];
          return ctx.generate(promptTokens(promptLen, vocab, i), { ...opts, sequence: i, onToken: () => stamps[i]!.push(performance.now()) });
        }),
      );
      const t1 = performance.now();
      // decode: the tokens after every stream has its first one, over that time
      const allStarted = Math.max(...stamps.map((s) => s[0]!));
      const end = Math.max(...stamps.map((s) => s[s.length - 1]!));
      const after = stamps.reduce((k, s) => k + s.filter((x) => x > allStarted).length, 0);
      const perStream = results.map((r) => r.timings.tokensPerSecond);

      // a request arriving while n - 1 others decode (each has made 16 tokens)
      let lateTtft: number | null = null;
      if (n >= 2) {
        await ctx.clear();
        const counts = new Array<number>(n - 1).fill(0);
        const others = Array.from({ length: n - 1 }, (_, i) =>
          ctx.generate(promptTokens(promptLen, vocab, 100 + i), { ...opts, sequence: i, onToken: () => void counts[i]!++ }),
        );
        while (counts.some((c) => c < 16)) await new Promise((r) => setTimeout(r, 1));
        const late = await ctx.generate(promptTokens(promptLen, vocab, 400), { ...opts, maxTokens: 1, sequence: 61 });
        lateTtft = late.timings.timeToFirstTokenMs;
        for (const g of others) g.abort(); // measured: no need to finish them
        await Promise.all(others);
      }
      console.log(
        JSON.stringify({
          engine: 'xglm-node',
          sequences: n,
          aggregate_decode_tps: +(after / ((end - allStarted) / 1000)).toFixed(2),
          aggregate_total_tps: +((n * tokens) / ((t1 - t0) / 1000)).toFixed(2),
          per_stream_tps_median: +median(perStream).toFixed(2),
          ttft_idle_ms: +idleTtft.toFixed(1),
          ttft_while_others_decode_ms: lateTtft === null ? null : +lateTtft.toFixed(1),
          wall_ms: +(t1 - t0).toFixed(0),
        }),
      );
    }
  }
  model.dispose();
}

void main();

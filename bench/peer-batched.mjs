// node-llama-cpp (the peer) with N sequences of one LlamaContext, as bench/batched.ts measures
// xglm-node: aggregate and per-stream decode tokens/s of N greedy streams started together, and
// the time to first token of a request arriving while N - 1 others decode. Run by
// bench/batched.ts --peer DIR (node-llama-cpp installed in DIR, where this file is copied).
// Prints one JSON line per N.
import { getLlama } from 'node-llama-cpp';

const cfg = JSON.parse(process.argv[2]);

// the prompts bench/batched.ts gives ours, by salt (cfg.prompts): the same ids
const promptTokens = (_n, _vocab, salt) => cfg.prompts[salt];
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];

/** One greedy stream: timestamps of its tokens (the first is its time to first token). */
async function stream(seq, ids, tokens, onToken, stop) {
  const stamps = [];
  const start = performance.now();
  for await (const _tok of seq.evaluate(ids, { temperature: 0 })) {
    stamps.push(performance.now());
    onToken?.();
    if (stamps.length >= tokens || stop?.stopped) break;
  }
  return { start, stamps };
}

const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error', progressLogs: false });
const model = await llama.loadModel({ modelPath: cfg.modelPath, gpuLayers: 0, useMmap: true });
for (const n of cfg.seqs) {
  for (let run = 0; run < cfg.runs; run++) {
    const ctx = await model.createContext({
      contextSize: (n + 1) * (cfg.prompt + cfg.tokens) + 64,
      batchSize: 512,
      threads: cfg.threads,
      sequences: n + 1,
      flashAttention: false,
    });
    const seqs = Array.from({ length: n + 1 }, () => ctx.getSequence());
    await stream(seqs[n], promptTokens(16, cfg.vocab, 999), 2); // touches the weights
    await seqs[n].clearHistory();
    const idle = await stream(seqs[n], promptTokens(cfg.prompt, cfg.vocab, 500), 1);
    const idleTtft = idle.stamps[0] - idle.start;
    await seqs[n].clearHistory();

    const t0 = performance.now();
    const rs = await Promise.all(Array.from({ length: n }, (_, i) => stream(seqs[i], promptTokens(cfg.prompt, cfg.vocab, i), cfg.tokens)));
    const t1 = performance.now();
    const allStarted = Math.max(...rs.map((r) => r.stamps[0]));
    const end = Math.max(...rs.map((r) => r.stamps[r.stamps.length - 1]));
    const after = rs.reduce((k, r) => k + r.stamps.filter((x) => x > allStarted).length, 0);
    const perStream = rs.map((r) => (r.stamps.length - 1) / ((r.stamps[r.stamps.length - 1] - r.stamps[0]) / 1000));

    let lateTtft = null;
    if (n >= 2) {
      for (const s of seqs) await s.clearHistory();
      const counts = new Array(n - 1).fill(0);
      const stop = { stopped: false };
      const others = Array.from({ length: n - 1 }, (_, i) => stream(seqs[i], promptTokens(cfg.prompt, cfg.vocab, 100 + i), cfg.tokens, () => counts[i]++, stop));
      while (counts.some((c) => c < 16)) await new Promise((r) => setTimeout(r, 1));
      const late = await stream(seqs[n], promptTokens(cfg.prompt, cfg.vocab, 400), 1);
      lateTtft = late.stamps[0] - late.start;
      stop.stopped = true; // measured: no need to finish them
      await Promise.all(others);
    }
    console.log(
      JSON.stringify({
        engine: 'node-llama-cpp',
        sequences: n,
        aggregate_decode_tps: +(after / ((end - allStarted) / 1000)).toFixed(2),
        aggregate_total_tps: +((n * cfg.tokens) / ((t1 - t0) / 1000)).toFixed(2),
        per_stream_tps_median: +median(perStream).toFixed(2),
        ttft_idle_ms: +idleTtft.toFixed(1),
        ttft_while_others_decode_ms: lateTtft === null ? null : +lateTtft.toFixed(1),
        wall_ms: +(t1 - t0).toFixed(0),
      }),
    );
    await ctx.dispose();
  }
}
await model.dispose();

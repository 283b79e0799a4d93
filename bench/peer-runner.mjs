// One measurement of node-llama-cpp (the peer) on a GGUF file, in its own process.
// Run by bench/index.ts with node-llama-cpp installed on demand in a temporary folder:
//   node peer-runner.mjs '{"modelPath":"…","threads":2,"prompt":512,"decode":128,"ttftPrompt":64,"nCtx":1024}'
// Prints one JSON line: { load_ms, prefill_tps, decode_tps, ttft_ms, peak_rss_mb }.
// Token ids are fed directly (the same ids as ours), so tokenization is not measured.
import { getLlama } from 'node-llama-cpp';
import fs from 'node:fs';

const cfg = JSON.parse(process.argv[2]);

function peakRssMb() {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) / 1024 : process.resourceUsage().maxRSS / 1024;
}

function promptTokens(n, vocab) {
  // deterministic ids spread over the vocabulary, starting with </s> (2) like XGLM
  const ids = [2];
  let x = 12345;
  while (ids.length < n) {
    x = (x * 1103515245 + 12345) % 2147483648;
    ids.push(10 + (x % (vocab - 20)));
  }
  return ids;
}

const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error', progressLogs: false });
let t0 = performance.now();
const model = await llama.loadModel({ modelPath: cfg.modelPath, gpuLayers: 0, useMmap: true });
const loadMs = performance.now() - t0;
const vocab = cfg.vocab ?? 256008;

async function withContext(fn) {
  const ctx = await model.createContext({ contextSize: cfg.nCtx, batchSize: Math.min(512, cfg.nCtx), threads: cfg.threads, sequences: 1, flashAttention: false });
  try {
    return await fn(ctx.getSequence());
  } finally {
    await ctx.dispose();
  }
}

const out = { load_ms: loadMs };

// prefill: evaluate cfg.prompt tokens, no generation
out.prefill_tps = await withContext(async (seq) => {
  const ids = promptTokens(cfg.prompt, vocab);
  t0 = performance.now();
  await seq.evaluateWithoutGeneratingNewTokens(ids);
  return ids.length / ((performance.now() - t0) / 1000);
});

// time to first token for a short prompt, then cfg.decode greedy tokens
Object.assign(out, await withContext(async (seq) => {
  const ids = promptTokens(cfg.ttftPrompt, vocab);
  const start = performance.now();
  let first = 0;
  let n = 0;
  let decodeStart = 0;
  for await (const _tok of seq.evaluate(ids, { temperature: 0 })) {
    n++;
    if (n === 1) {
      first = performance.now() - start;
      decodeStart = performance.now();
    }
    if (n > cfg.decode) break;
  }
  const decodeMs = performance.now() - decodeStart;
  return { ttft_ms: first, decode_tps: cfg.decode / (decodeMs / 1000) };
}));

out.peak_rss_mb = peakRssMb();
await model.dispose();
await llama.dispose();
process.stdout.write(JSON.stringify(out) + '\n');

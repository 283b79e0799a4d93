// One measurement of node-llama-cpp (the peer) on a GGUF file, in its own process.
// Run by bench/index.ts with node-llama-cpp installed on demand in .bench-cache/peer/:
//   node peer-runner.mjs '{"modelPath":"…","threads":2,"prompts":[128,512],"decode":128,"ttftPrompt":64,"nCtx":1024,"vocab":256008,"promptIds":[2,…]}'
// Prints one JSON line: { load_ms, prefill: {"128": tps, …}, decode_tps, ttft_ms, peak_rss_mb, info }
// (info: the settings below and the ggml CPU library node-llama-cpp loaded, for the report).
// Token ids are fed directly (the same ids as ours), so tokenization is not measured.
import { getLlama } from 'node-llama-cpp';
import fs from 'node:fs';

const cfg = JSON.parse(process.argv[2]);

function peakRssMb() {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) / 1024 : process.resourceUsage().maxRSS / 1024;
}

// ours' ids (src/cli/bench.ts benchPromptIds, made by bench/index.ts): the first n of them
function promptTokens(n) {
  if (!Array.isArray(cfg.promptIds) || cfg.promptIds.length < n) throw new Error(`peer-runner: cfg.promptIds has fewer than ${n} ids`);
  return cfg.promptIds.slice(0, n);
}

const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error', progressLogs: false });
let t0 = performance.now();
const model = await llama.loadModel({ modelPath: cfg.modelPath, gpuLayers: 0, useMmap: true });
const out = { load_ms: performance.now() - t0, prefill: {} };
// the settings the report discloses (out.info.settings): flash attention off, as node-llama-cpp's default
const settings = { contextSize: cfg.nCtx, batchSize: Math.min(512, cfg.nCtx), threads: cfg.threads, sequences: 1, flashAttention: false };
const ctx = await model.createContext(settings);
// which ggml CPU variant node-llama-cpp picked at run time: the libggml-cpu-<variant>.so it mapped
const cpuLibs = [...new Set(fs.readFileSync('/proc/self/maps', 'utf8').split('\n').map((l) => /\/(libggml-cpu[^/\s]*\.so)\b/.exec(l)?.[1]).filter(Boolean))];
out.info = {
  settings: { ...settings, gpuLayers: 0, useMmap: true, kvType: 'f16 (default)' },
  gpu: llama.gpu,
  buildType: llama.buildType,
  llamaCppRelease: llama.llamaCppRelease,
  cpuMathCores: llama.cpuMathCores,
  cpuLibraries: cpuLibs,
  variant: cpuLibs.map((l) => /libggml-cpu-?(.*)\.so/.exec(l)?.[1] || 'static').join(', ') || 'unknown',
  systemInfo: llama.systemInfo,
};
const seq = ctx.getSequence();
// one short evaluation first (as ours-runner.ts does): the first touches every weight page
for await (const _tok of seq.evaluate(promptTokens(16), { temperature: 0 })) break;

for (const n of cfg.prompts) {
  await seq.clearHistory();
  const ids = promptTokens(n);
  t0 = performance.now();
  await seq.evaluateWithoutGeneratingNewTokens(ids);
  out.prefill[n] = ids.length / ((performance.now() - t0) / 1000);
}

if (cfg.decode > 0) {
  await seq.clearHistory();
  const ids = promptTokens(cfg.ttftPrompt);
  const start = performance.now();
  let n = 0;
  let decodeStart = 0;
  for await (const _tok of seq.evaluate(ids, { temperature: 0 })) {
    n++;
    if (n === 1) {
      out.ttft_ms = performance.now() - start;
      decodeStart = performance.now();
    }
    if (n > cfg.decode) break;
  }
  out.decode_tps = cfg.decode / ((performance.now() - decodeStart) / 1000);
}

if (cfg.scoreTexts) {
  // the peer's way to score: evaluate each full text (a lower bound: it reads no log-probs)
  t0 = performance.now();
  for (const ids of cfg.scoreTexts) {
    await seq.clearHistory();
    await seq.evaluateWithoutGeneratingNewTokens(ids);
  }
  out.score_ms = performance.now() - t0;
}

out.peak_rss_mb = peakRssMb();
await ctx.dispose();
await model.dispose();
await llama.dispose();
process.stdout.write(JSON.stringify(out) + '\n');

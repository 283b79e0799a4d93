/**
 * One measurement of xglm-node on a GGUF file, in its own process (so load time and peak
 * RSS are its own); the counterpart of peer-runner.mjs, with the same inputs:
 *   node --import tsx bench/ours-runner.ts '{"modelPath":"…","threads":2,"prompts":[128,512],"decode":128,"ttftPrompt":64,"nCtx":1024}'
 * Prints { load_ms, prefill: {"128": tps, …}, decode_tps, ttft_ms, peak_rss_mb, info, [score_ms, score_continuations_ms, choose_ms, choose_agrees] }
 * (info: the context settings and backendInfo() — ggml variant and kernel plan — for the report).
 */
import { benchPromptIds, peakRssMb } from '../src/cli/bench.js';
import { backendInfo, loadModel } from '../src/index.js';

interface Config {
  modelPath: string;
  threads: number;
  prompts: number[];
  decode: number;
  ttftPrompt: number;
  nCtx: number;
  kvType?: 'f16' | 'f32' | 'q8_0';
  /** COPA-shaped items: score each full text, then scoreContinuations (full totals, then continuations only). */
  copa?: Array<{ premise: string; choices: string[] }>;
}

async function main(): Promise<void> {
  const cfg = JSON.parse(process.argv[2]!) as Config;
  let t0 = performance.now();
  const model = await loadModel(cfg.modelPath);
  const out: Record<string, unknown> = { load_ms: performance.now() - t0 };
  const settings = { contextSize: cfg.nCtx, batchSize: Math.min(512, cfg.nCtx), threads: cfg.threads, ...(cfg.kvType ? { kvType: cfg.kvType } : {}) };
  const ctx = await model.createContext(settings);
  // after the context exists: the kernel plan is decided with it
  out.info = { settings: { ...settings, kvType: cfg.kvType ?? 'f16 (default)' }, backend: backendInfo(), env: Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('XGLM_'))) };
  const vocab = model.info.hparams.nVocab;
  // one short evaluation first (as peer-runner.mjs does): the first touches every weight page
  await ctx.generate(benchPromptIds(16, vocab), { maxTokens: 1, temperature: 0 });
  const prefill: Record<number, number> = {};
  for (const n of cfg.prompts) {
    await ctx.clear();
    const r = await ctx.generate(benchPromptIds(n, vocab), { maxTokens: 0 });
    prefill[n] = n / (r.timings.promptMs / 1000);
  }
  out.prefill = prefill;
  if (cfg.decode > 0) {
    await ctx.clear();
    const r = await ctx.generate(benchPromptIds(cfg.ttftPrompt, vocab), { maxTokens: cfg.decode + 1, temperature: 0, stopAtEos: false });
    out.ttft_ms = r.timings.timeToFirstTokenMs;
    out.decode_tps = r.timings.tokensPerSecond;
    // share of decode wall time outside ggml's graph computation (sampling, crossings, detokenization, graph building)
    out.decode_overhead_pct = r.timings.generateMs > 0 ? (100 * (r.timings.generateMs - r.timings.generateComputeMs)) / r.timings.generateMs : undefined;
  }
  if (cfg.copa) {
    const texts = cfg.copa.flatMap((c) => c.choices.map((ch) => c.premise + ch));
    const decisionOf = (a: number, b: number) => (a >= b ? 0 : 1);
    const totals: number[] = [];
    t0 = performance.now();
    for (const text of texts) totals.push((await ctx.score([text]))[0]!.logprob);
    out.score_ms = performance.now() - t0;
    t0 = performance.now();
    for (const c of cfg.copa) await ctx.scoreContinuations(c.premise, c.choices);
    out.score_continuations_ms = performance.now() - t0;
    // the COPA decision: continuations only (the prefix's log-probs are the same for both)
    const decisions: number[] = [];
    t0 = performance.now();
    for (const c of cfg.copa) {
      const [a, b] = await ctx.scoreContinuations(c.premise, c.choices, { scorePrefix: false });
      decisions.push(decisionOf(a!.continuationLogprob, b!.continuationLogprob));
    }
    out.choose_ms = performance.now() - t0;
    // the same decisions as the model card's recipe (the larger full-text total)?
    out.choose_agrees = cfg.copa.every((_, i) => decisions[i] === decisionOf(totals[2 * i]!, totals[2 * i + 1]!));
    out.score_token_ids = texts.map((t) => model.tokenize(t));
  }
  out.peak_rss_mb = peakRssMb();
  await model.dispose();
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((err) => {
  process.stderr.write(`ours-runner: ${(err as Error).message}\n`);
  process.exit(1);
});

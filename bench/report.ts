/**
 * Turns a benchmark run into docs/benchmarks/<cpu>.json and <cpu>.svg and this CPU's results
 * block of docs/benchmarks.md. The document keeps one block per CPU it was measured on, each
 * between `<!-- bench:begin cpu="KEY" -->` and `<!-- bench:end -->` (KEY: bench/cpu.ts's key,
 * model name plus family and model); a run replaces its own CPU's block and keeps the others.
 */
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../src/paths.js';
import { describeCpu, type CpuInfo } from './cpu.js';
import type { LlamaCppResult } from './llama-cpp.js';

/** The kernel plan backendInfo() reports where the addon has one (tolerated absent). */
interface KernelPlan {
  isa: 'avx512' | 'avx2' | 'none';
  vnni: boolean;
  ops: Array<{ node: string; impl: 'xglm' | 'ggml'; detail: string }>;
}

interface OursInfo {
  settings: Record<string, unknown>;
  backend: { variant: string; features: string[]; kernels?: string; kernelPlan?: KernelPlan; ggmlVersion?: string; compiler?: string };
  env: Record<string, string>;
}

interface PeerInfo {
  settings: Record<string, unknown>;
  gpu: unknown;
  buildType: string;
  llamaCppRelease?: { repo?: string; release?: string };
  cpuMathCores?: number;
  cpuLibraries: string[];
  variant: string;
  systemInfo?: string;
}

export interface ImplResult {
  load_ms: number;
  prefill: Record<string, number>;
  decode_tps?: number;
  ttft_ms?: number;
  peak_rss_mb: number;
  decode_overhead_pct?: number;
  score_ms?: number;
  score_continuations_ms?: number;
  choose_ms?: number;
  choose_agrees?: boolean;
  score_token_ids?: number[][];
  /** Read bandwidth (GB/s, same thread count) measured just before this run. */
  bandwidth_gbs?: number;
  /** Settings, ggml variant and kernel plan of the run (ours-runner.ts, peer-runner.mjs). */
  info?: OursInfo | PeerInfo;
}

export interface BenchReport {
  date: string;
  machine: {
    cpu: string;
    /** Absent in runs before 2026-12. */
    cpuInfo?: CpuInfo;
    cores: number;
    memoryGiB: number;
    backend: { variant: string; features: string[]; ggmlVersion: string; kernels?: string; compiler?: string };
    bandwidthGBs: Record<number, number>;
    /** FP32 FMA GFLOP/s of the widest vector unit (peakIsa). */
    peakGflops: Record<number, number>;
    peakGflopsAvx2?: Record<number, number>;
    peakIsa?: string;
    /** 1-minute load average when the run started and ended: other work on the machine shows here. */
    loadAverage?: { start: number; end?: number };
  };
  settings: { reps: number; decode: number; prompts: number[]; nCtx: number; peer?: string; llamaCpp?: { description: string; buildFlags?: string } };
  rows: Array<{ type: string; threads: number; bytesPerToken: number; weightsPerPrefillToken: number; ours: ImplResult[]; peer: ImplResult[]; llamaCpp: LlamaCppResult[] }>;
  scoring?: {
    type: string;
    threads: number;
    items: number;
    scoreEachMs: number;
    scoreContinuationsMs: number;
    /** scoreContinuations with scorePrefix: false, the COPA decision. */
    chooseMs?: number;
    /** Its decisions equal the full-text recipe's on every item. */
    chooseAgrees?: boolean;
    peerEvaluateEachMs: number | undefined;
  };
}

const BEGIN = (key: string) => `<!-- bench:begin cpu="${key.replace(/"/g, "'")}" -->`;
const END = '<!-- bench:end -->';
const BLOCK = /<!-- bench:begin cpu="([^"]*)" -->[\s\S]*?<!-- bench:end -->/g;

const slug = (key: string) => key.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');

function fmt(xs: number[], median: (v: number[]) => number, digits = 1): string {
  if (xs.length === 0) return '–';
  const m = median(xs);
  if (xs.length === 1) return m.toFixed(digits);
  return `${m.toFixed(digits)} (${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)})`;
}

function ratio(a: number[], b: number[], median: (v: number[]) => number): string {
  if (!a.length || !b.length) return '–';
  return `**${(median(a) / median(b)).toFixed(2)}×**`;
}

/** Which flash-attention setting llama-bench was faster with, over the runs: `fa off`, `fa on` or `fa off 2/3`. */
function faChoice(runs: LlamaCppResult[], key: 'pp_fa' | 'tg_fa'): string {
  if (!runs.length) return '';
  const counts = new Map<string, number>();
  for (const r of runs) counts.set(r[key], (counts.get(r[key]) ?? 0) + 1);
  const [best, n] = [...counts].sort((a, b) => b[1] - a[1])[0]!;
  return ` fa ${best}${n < runs.length ? ` ${n}/${runs.length}` : ''}`;
}

function kernelPlanText(b: OursInfo['backend'] | undefined): string {
  if (!b) return 'not recorded';
  const plan = b.kernelPlan;
  if (!plan) return `\`${b.kernels ?? 'unknown'}\` (this build reports no per-op kernel plan)`;
  const ops = plan.ops.map((o) => `${o.node} → ${o.impl}${o.detail ? ` (${o.detail})` : ''}`).join('; ');
  return `isa \`${plan.isa}\`, VNNI ${plan.vnni ? 'yes' : 'no'}; ${ops || 'no ops listed'}`;
}

const settingsText = (o: Record<string, unknown> | undefined) =>
  o ? Object.entries(o).map(([k, v]) => `${k} ${typeof v === 'string' ? v : JSON.stringify(v)}`).join(', ') : 'not recorded';

function svgChart(report: BenchReport, median: (v: number[]) => number): string {
  const threads = Math.max(...report.rows.map((r) => r.threads));
  const rows = report.rows.filter((r) => r.threads === threads);
  const W = 720;
  const H = 420;
  const m = { l: 60, r: 170, t: 40, b: 50 };
  const xs = report.settings.prompts;
  const series: Array<{ name: string; color: string; dash: string; pts: Array<[number, number]> }> = [];
  const colors = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b'];
  rows.forEach((r, i) => {
    for (const who of ['ours', 'peer'] as const) {
      const runs = r[who];
      if (!runs.length) continue;
      series.push({
        name: `${who === 'ours' ? 'xglm-node' : 'node-llama-cpp'} ${r.type}`,
        color: colors[i % colors.length]!,
        dash: who === 'ours' ? '' : '6 4',
        pts: xs.map((x) => [x, median(runs.map((u) => u.prefill[x] ?? 0))]),
      });
    }
  });
  const ymax = Math.max(1, ...series.flatMap((s) => s.pts.map((p) => p[1])), ...rows.flatMap((r) => (r.llamaCpp ?? []).map((u) => u.pp_tps))) * 1.1;
  const lx = (x: number) => m.l + ((Math.log2(x) - Math.log2(xs[0]!)) / Math.max(1e-9, Math.log2(xs.at(-1)!) - Math.log2(xs[0]!))) * (W - m.l - m.r);
  const ly = (y: number) => H - m.b - (y / ymax) * (H - m.t - m.b);
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${m.l}" y="22" font-size="14">Prompt processing, ${threads} threads: tokens/s by prompt length (solid: xglm-node, dashed: node-llama-cpp)</text>`,
    `<line x1="${m.l}" y1="${H - m.b}" x2="${W - m.r}" y2="${H - m.b}" stroke="black"/>`,
    `<line x1="${m.l}" y1="${m.t}" x2="${m.l}" y2="${H - m.b}" stroke="black"/>`,
    ...xs.map((x) => `<text x="${lx(x)}" y="${H - m.b + 18}" text-anchor="middle">${x}</text>`),
    `<text x="${(m.l + W - m.r) / 2}" y="${H - 12}" text-anchor="middle">prompt tokens</text>`,
    ...[0, 0.25, 0.5, 0.75, 1].map((f) => `<text x="${m.l - 6}" y="${ly(f * ymax) + 4}" text-anchor="end">${(f * ymax).toFixed(0)}</text><line x1="${m.l}" x2="${W - m.r}" y1="${ly(f * ymax)}" y2="${ly(f * ymax)}" stroke="#eee"/>`),
  ];
  series.forEach((s, i) => {
    parts.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2" ${s.dash ? `stroke-dasharray="${s.dash}"` : ''} points="${s.pts.map(([x, y]) => `${lx(x).toFixed(1)},${ly(y).toFixed(1)}`).join(' ')}"/>`);
    parts.push(`<line x1="${W - m.r + 10}" x2="${W - m.r + 34}" y1="${m.t + 14 + i * 18}" y2="${m.t + 14 + i * 18}" stroke="${s.color}" stroke-width="2" ${s.dash ? `stroke-dasharray="${s.dash}"` : ''}/>`);
    parts.push(`<text x="${W - m.r + 40}" y="${m.t + 18 + i * 18}">${s.name}</text>`);
  });
  // llama-bench measures 512 tokens only: one marker per type at x = 512
  rows.forEach((r, i) => {
    if (!r.llamaCpp?.length || !xs.includes(512)) return;
    const y = median(r.llamaCpp.map((u) => u.pp_tps));
    parts.push(`<rect x="${(lx(512) - 4).toFixed(1)}" y="${(ly(y) - 4).toFixed(1)}" width="8" height="8" fill="${colors[i % colors.length]}"/>`);
  });
  if (rows.some((r) => r.llamaCpp?.length)) parts.push(`<text x="${m.l}" y="${m.t - 4}" font-size="11">squares: llama.cpp llama-bench pp512</text>`);
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

export function writeReport(report: BenchReport, median: (v: number[]) => number): void {
  const mc = report.machine;
  const key = mc.cpuInfo?.key ?? mc.cpu;
  const dir = path.join(packageRoot, 'docs', 'benchmarks');
  fs.mkdirSync(dir, { recursive: true });
  const files = slug(key);
  const slim = { ...report, rows: report.rows.map((r) => ({ ...r, ours: r.ours.map(({ score_token_ids: _, ...o }) => o) })) };
  fs.writeFileSync(path.join(dir, `${files}.json`), JSON.stringify(slim, null, 2) + '\n');
  fs.writeFileSync(path.join(dir, `${files}.svg`), svgChart(report, median));

  const s = report.settings;
  const oursInfo = report.rows.flatMap((r) => r.ours).find((x) => x.info)?.info as OursInfo | undefined;
  const peerInfo = report.rows.flatMap((r) => r.peer).find((x) => x.info)?.info as PeerInfo | undefined;
  const llamaRuns = report.rows.flatMap((r) => r.llamaCpp ?? []);
  const li = llamaRuns[0]?.info;
  const hasPeer = report.rows.some((r) => r.peer.length);
  const hasLlama = llamaRuns.length > 0;
  const peakWhat = (mc.peakIsa ?? 'avx2') === 'avx512' ? '512-bit (AVX-512) code' : '256-bit (AVX2) code';
  const peakText = Object.entries(mc.peakGflops).map(([t, v]) => {
    const avx2 = mc.peakGflopsAvx2?.[Number(t)];
    return `${v.toFixed(0)} GFLOP/s (${t} thread${t === '1' ? '' : 's'}${avx2 !== undefined && mc.peakIsa === 'avx512' ? `; ${avx2.toFixed(0)} with 256-bit code` : ''})`;
  });
  const b = oursInfo?.backend ?? mc.backend;
  const lines: string[] = [
    BEGIN(key),
    `### ${mc.cpuInfo ? describeCpu(mc.cpuInfo) : mc.cpu}`,
    '',
    `Run of ${report.date.slice(0, 10)} (${report.date}): ${mc.cores} cores, ${mc.memoryGiB} GiB; ggml ${mc.backend.ggmlVersion}.${mc.loadAverage ? ` Load average (1 min) ${mc.loadAverage.start.toFixed(1)} at the start, ${mc.loadAverage.end?.toFixed(1) ?? '?'} at the end (above 0 means other work shared the cores).` : ''}`,
    `Read bandwidth (own microbenchmark, best of 5 reads of 1 GiB at the start): ${Object.entries(mc.bandwidthGBs).map(([t, v]) => `${v.toFixed(1)} GB/s with ${t} thread${t === '1' ? '' : 's'}`).join(', ')}; peak FP32 FMA with ${peakWhat}: ${peakText.join(', ')}. The bandwidth bound of decode is that bandwidth ÷ the weight bytes read per token; as this machine's bandwidth drifts, each run is also set against a read of 512 MB measured just before it (in brackets: the median of those shares).`,
    `Models: random weights, exact xglm-564M shape; the peers run GPT-2-architecture files with identical tensors. Medians of ${s.reps} runs (min–max), each in its own process; the implementations take turns (ours, node-llama-cpp, llama.cpp, then the reverse order).`,
    '',
    'Settings and code paths of each side:',
    `- **xglm-node**: ${settingsText(oursInfo?.settings)}${oursInfo && Object.keys(oursInfo.env).length ? `; environment ${settingsText(oursInfo.env)}` : ''}. ggml CPU code \`${b.variant}\` (${b.features.join(' ')})${b.compiler ? `, built with ${b.compiler}` : ''}. Kernel plan: ${kernelPlanText(b)}.`,
  ];
  if (hasPeer) {
    lines.push(
      `- **${s.peer}**: ${settingsText(peerInfo?.settings)}. ggml CPU library it loaded: ${peerInfo ? `\`${peerInfo.variant}\` (${peerInfo.cpuLibraries?.join(', ') || 'none found in /proc/self/maps'}; ${peerInfo.buildType} binaries, llama.cpp ${peerInfo.llamaCppRelease?.release ?? '?'}, gpu ${String(peerInfo.gpu)})` : 'not recorded'}.${peerInfo?.systemInfo ? ` Its system info: \`${peerInfo.systemInfo.trim()}\`.` : ''}`,
    );
  }
  if (hasLlama && li) {
    const fa = (k: 'pp_fa' | 'tg_fa') => { const c = faChoice(llamaRuns, k).trim(); return c || '–'; };
    lines.push(
      `- **llama.cpp** (\`llama-bench\`): ${s.llamaCpp?.description ?? ''}${s.llamaCpp?.buildFlags ? ` (${s.llamaCpp.buildFlags})` : ''}; build ${li.build_commit}, backends ${li.backends}, CPU "${li.cpu_info}". Each run: \`llama-bench -p 512 -n ${s.decode} -t T -r 1 -fa 0,1 -o json\` (its own warm-up run first), batch ${li.n_batch}, ubatch ${li.n_ubatch}, KV ${li.type_k}/${li.type_v}, load mode ${li.load_mode}, poll ${li.poll}; of the two flash-attention settings the faster is kept per test and run (over all runs: prefill ${fa('pp_fa')}, decode ${fa('tg_fa')}; per row in the tables).`,
    );
  }
  lines.push(
    '',
    `Decode: ours and node-llama-cpp generate ${s.decode} tokens after a 64-token prompt; llama.cpp's tg${s.decode} decodes ${s.decode} tokens from an empty context (a slightly easier task: no 64 cached tokens to attend to).`,
    '',
    '| type | threads | decode t/s ours | node-llama-cpp | llama.cpp tg' + s.decode + ' | ours ÷ node-llama-cpp | ours ÷ llama.cpp | ours: % of bandwidth bound |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
  );
  const p = (impl: ImplResult[], n: number) => impl.filter((x) => x.prefill[n] !== undefined).map((x) => x.prefill[n]!);
  for (const r of report.rows) {
    const od = r.ours.map((x) => x.decode_tps ?? 0);
    const pd = r.peer.map((x) => x.decode_tps ?? 0);
    const ld = (r.llamaCpp ?? []).map((x) => x.tg_tps);
    const bound = ((mc.bandwidthGBs[r.threads] ?? 0) * 1e9) / r.bytesPerToken;
    // each run against the bandwidth measured just before it, the median of those shares
    const beside = r.ours.filter((x) => x.bandwidth_gbs && x.decode_tps).map((x) => (x.decode_tps! * r.bytesPerToken) / (x.bandwidth_gbs! * 1e9));
    const besideText = beside.length ? ` (beside each run: ${(median(beside) * 100).toFixed(0)}%)` : '';
    lines.push(
      `| ${r.type} | ${r.threads} | ${fmt(od, median)} | ${fmt(pd, median)} | ${fmt(ld, median)}${faChoice(r.llamaCpp ?? [], 'tg_fa')} | ${ratio(od, pd, median)} | ${ratio(od, ld, median)} | ${bound > 0 && od.length ? `${((median(od) / bound) * 100).toFixed(0)}% of ${bound.toFixed(1)}${besideText}` : '–'} |`,
    );
  }
  const peakFor = (t: number) => (mc.peakGflops[t] ?? 0) * 1e9;
  lines.push(
    '',
    `Prefill (tokens/s of a prompt of 128 or 512 tokens; llama.cpp: pp512). The last column: ours at 512 tokens in FLOPs as a share of the peak FP32 FMA throughput above (${peakWhat}), for float weights only (integer dot products of quantized types are not FP32 FMAs), counting 2 FLOPs per weight of the layers' matrices per token — ${(report.rows[0]?.weightsPerPrefillToken ?? 0) / 1e6 > 0 ? `${((report.rows[0]?.weightsPerPrefillToken ?? 0) / 1e6).toFixed(1)}M weights` : 'the layer weights'}; not the 262M-weight output matrix, which prefill never multiplies (no logits row is computed), nor attention's score and value products (≈4% more at 512 tokens).`,
    '',
    '| type | threads | prefill 128 ours | node-llama-cpp | ratio | prefill 512 ours | node-llama-cpp | llama.cpp pp512 | ours ÷ node-llama-cpp | ours ÷ llama.cpp | ours 512: % of peak FMA |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  );
  for (const r of report.rows) {
    const lp = (r.llamaCpp ?? []).map((x) => x.pp_tps);
    const o512 = p(r.ours, 512);
    const isFloat = r.type === 'f16' || r.type === 'f32' || r.type === 'bf16';
    const share = isFloat && o512.length && peakFor(r.threads) > 0 ? `${(((median(o512) * 2 * r.weightsPerPrefillToken) / peakFor(r.threads)) * 100).toFixed(0)}%` : '–';
    lines.push(
      `| ${r.type} | ${r.threads} | ${fmt(p(r.ours, 128), median, 0)} | ${fmt(p(r.peer, 128), median, 0)} | ${ratio(p(r.ours, 128), p(r.peer, 128), median)} | ${fmt(o512, median, 0)} | ${fmt(p(r.peer, 512), median, 0)} | ${fmt(lp, median, 0)}${faChoice(r.llamaCpp ?? [], 'pp_fa')} | ${ratio(o512, p(r.peer, 512), median)} | ${ratio(o512, lp, median)} | ${share} |`,
    );
  }
  const ms = (impl: ImplResult[], f: (x: ImplResult) => number | undefined) => (impl.length ? median(impl.map((x) => f(x) ?? 0)).toFixed(0) : '–');
  lines.push('', '| type | threads | TTFT ms (64-token prompt) ours / node-llama-cpp | load ms ours / node-llama-cpp | peak RSS MB ours / node-llama-cpp |', '| --- | --- | --- | --- | --- |');
  for (const r of report.rows) {
    lines.push(`| ${r.type} | ${r.threads} | ${ms(r.ours, (x) => x.ttft_ms)} / ${ms(r.peer, (x) => x.ttft_ms)} | ${ms(r.ours, (x) => x.load_ms)} / ${ms(r.peer, (x) => x.load_ms)} | ${ms(r.ours, (x) => x.peak_rss_mb)} / ${ms(r.peer, (x) => x.peak_rss_mb)} |`);
  }
  const overhead = report.rows
    .filter((r) => r.ours.some((x) => x.decode_overhead_pct !== undefined))
    .map((r) => `${r.type}/${r.threads}t ${median(r.ours.map((x) => x.decode_overhead_pct ?? 0)).toFixed(1)}%`);
  if (overhead.length) lines.push('', `Share of xglm-node's decode time spent outside ggml's graph computation (sampling, JS↔native crossings, detokenization, graph building): ${overhead.join(', ')}.`);
  if (report.scoring) {
    const sc = report.scoring;
    lines.push(
      '',
      `Scoring ${sc.items} COPA-shaped items (premise + 2 choices; ${sc.type}, ${sc.threads} threads): score() of each full text (the model card's recipe) ${(sc.scoreEachMs / 1000).toFixed(1)} s; scoreContinuations with full-text totals ${(sc.scoreContinuationsMs / 1000).toFixed(1)} s (**${(sc.scoreEachMs / sc.scoreContinuationsMs).toFixed(2)}×** faster)` +
        (sc.chooseMs !== undefined
          ? `; scoreContinuations with \`scorePrefix: false\` (what the decision needs) ${(sc.chooseMs / 1000).toFixed(1)} s (**${(sc.scoreEachMs / sc.chooseMs).toFixed(2)}×** faster; decisions ${sc.chooseAgrees ? 'equal to the recipe\'s on every item' : '**differ** from the recipe\'s'})`
          : '') +
        (sc.peerEvaluateEachMs !== undefined
          ? `; node-llama-cpp only evaluating each full text (\`evaluateWithoutGeneratingNewTokens\`: no logits rows, so no scores — a lower bound of scoring with it) ${(sc.peerEvaluateEachMs / 1000).toFixed(1)} s.`
          : '.'),
    );
  }
  lines.push('', `![prefill tokens/s by prompt length](benchmarks/${files}.svg)`, '', `Raw figures: [benchmarks/${files}.json](benchmarks/${files}.json).`, END);

  const doc = path.join(packageRoot, 'docs', 'benchmarks.md');
  const block = lines.join('\n');
  let text = fs.existsSync(doc) ? fs.readFileSync(doc, 'utf8') : '# Benchmarks\n\n## Results by CPU\n\n';
  const blocks = [...text.matchAll(BLOCK)];
  const mine = blocks.find((m) => m[1] === key.replace(/"/g, "'"));
  if (mine) text = text.slice(0, mine.index) + block + text.slice(mine.index! + mine[0].length);
  else if (blocks.length) text = text.slice(0, blocks[0]!.index) + block + '\n\n' + text.slice(blocks[0]!.index); // newest CPU first
  else text = `${text.trimEnd()}\n\n${block}\n`;
  fs.writeFileSync(doc, text);
  process.stderr.write(`bench: wrote the block of "${key}" in docs/benchmarks.md, docs/benchmarks/${files}.{json,svg}\n`);
}

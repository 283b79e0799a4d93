/** Turns a benchmark run into docs/benchmarks/latest.json, latest.svg and the results block of docs/benchmarks.md. */
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../src/paths.js';

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
}

export interface BenchReport {
  date: string;
  machine: {
    cpu: string;
    cores: number;
    memoryGiB: number;
    backend: { variant: string; features: string[]; ggmlVersion: string };
    bandwidthGBs: Record<number, number>;
    peakGflops: Record<number, number>;
  };
  settings: { reps: number; decode: number; prompts: number[]; nCtx: number; peer: string };
  rows: Array<{ type: string; threads: number; bytesPerToken: number; ours: ImplResult[]; peer: ImplResult[] }>;
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

const BEGIN = '<!-- bench:begin (written by npm run bench) -->';
const END = '<!-- bench:end -->';

function fmt(xs: number[], median: (v: number[]) => number, digits = 1): string {
  if (xs.length === 0) return '–';
  const m = median(xs);
  if (xs.length === 1) return m.toFixed(digits);
  return `${m.toFixed(digits)} (${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)})`;
}

function ratio(a: number[], b: number[], median: (v: number[]) => number, inverse = false): string {
  if (!a.length || !b.length) return '–';
  const r = inverse ? median(b) / median(a) : median(a) / median(b);
  return `**${r.toFixed(2)}×**`;
}

/** 2 FLOPs per weight per token (the matrix products dominate). */
function flopsPerToken(bytesPerToken: number, type: string): number {
  const bytesPerWeight: Record<string, number> = { f32: 4, f16: 2, bf16: 2, q8_0: 34 / 32, q6_k: 210 / 256, q5_k_m: 176 / 256, q5_0: 22 / 32, q4_k_m: 150 / 256, q4_0: 18 / 32 };
  return (2 * bytesPerToken) / (bytesPerWeight[type] ?? 1);
}

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
  const ymax = Math.max(1, ...series.flatMap((s) => s.pts.map((p) => p[1]))) * 1.1;
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
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

export function writeReport(report: BenchReport, median: (v: number[]) => number): void {
  const dir = path.join(packageRoot, 'docs', 'benchmarks');
  fs.mkdirSync(dir, { recursive: true });
  const slim = { ...report, rows: report.rows.map((r) => ({ ...r, ours: r.ours.map(({ score_token_ids: _, ...o }) => o) })) };
  fs.writeFileSync(path.join(dir, 'latest.json'), JSON.stringify(slim, null, 2) + '\n');
  fs.writeFileSync(path.join(dir, 'latest.svg'), svgChart(report, median));

  const mc = report.machine;
  const lines: string[] = [
    BEGIN,
    `Run of ${report.date.slice(0, 10)} (${report.date}): ${mc.cpu}, ${mc.cores} cores, ${mc.memoryGiB} GiB; ggml ${mc.backend.ggmlVersion}, CPU code \`${mc.backend.variant}\` (${mc.backend.features.join(' ')}).`,
    `Read bandwidth (own microbenchmark, best of 5 reads of 1 GiB at the start): ${Object.entries(mc.bandwidthGBs).map(([t, v]) => `${v.toFixed(1)} GB/s with ${t} thread${t === '1' ? '' : 's'}`).join(', ')}; peak FP32 FMA: ${Object.entries(mc.peakGflops).map(([t, v]) => `${v.toFixed(0)} GFLOP/s (${t})`).join(', ')}. The bandwidth bound of decode is that bandwidth ÷ the weight bytes read per token; as this machine's bandwidth drifts, each run is also set against a read of 512 MB measured just before it (in brackets: the median of those shares).`,
    `Models: random weights, exact xglm-564M shape; the peer runs ${report.settings.peer} on GPT-2-architecture files with identical tensors. Medians of ${report.settings.reps} runs (min–max), each in its own process, ours and the peer's alternating. Decode: ${report.settings.decode} tokens after a 64-token prompt.`,
    '',
    '| type | threads | decode t/s ours | decode t/s peer | decode ratio | % of bandwidth bound | prefill 128 ours | peer | ratio | prefill 512 ours | peer | ratio | TTFT ms ours / peer | load ms ours / peer | peak RSS MB ours / peer |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of report.rows) {
    const od = r.ours.map((x) => x.decode_tps ?? 0);
    const pd = r.peer.map((x) => x.decode_tps ?? 0);
    const bound = ((mc.bandwidthGBs[r.threads] ?? 0) * 1e9) / r.bytesPerToken;
    // each run against the bandwidth measured just before it, the median of those shares
    const beside = r.ours.filter((x) => x.bandwidth_gbs && x.decode_tps).map((x) => (x.decode_tps! * r.bytesPerToken) / (x.bandwidth_gbs! * 1e9));
    const besideText = beside.length ? ` (beside each run: ${(median(beside) * 100).toFixed(0)}%)` : '';
    // prompt lengths this run did not measure show as '–'
    const p = (impl: ImplResult[], n: number) => impl.filter((x) => x.prefill[n] !== undefined).map((x) => x.prefill[n]!);
    const ms = (impl: ImplResult[], f: (x: ImplResult) => number | undefined) => (impl.length ? median(impl.map((x) => f(x) ?? 0)).toFixed(0) : '–');
    lines.push(
      `| ${r.type} | ${r.threads} | ${fmt(od, median)} | ${fmt(pd, median)} | ${ratio(od, pd, median)} | ${bound > 0 ? `${((median(od) / bound) * 100).toFixed(0)}% of ${bound.toFixed(1)}${besideText}` : '–'} | ${fmt(p(r.ours, 128), median, 0)} | ${fmt(p(r.peer, 128), median, 0)} | ${ratio(p(r.ours, 128), p(r.peer, 128), median)} | ${fmt(p(r.ours, 512), median, 0)} | ${fmt(p(r.peer, 512), median, 0)} | ${ratio(p(r.ours, 512), p(r.peer, 512), median)} | ${ms(r.ours, (x) => x.ttft_ms)} / ${ms(r.peer, (x) => x.ttft_ms)} | ${ms(r.ours, (x) => x.load_ms)} / ${ms(r.peer, (x) => x.load_ms)} | ${ms(r.ours, (x) => x.peak_rss_mb)} / ${ms(r.peer, (x) => x.peak_rss_mb)} |`,
    );
  }
  const overhead = report.rows
    .filter((r) => r.ours.some((x) => x.decode_overhead_pct !== undefined))
    .map((r) => `${r.type}/${r.threads}t ${median(r.ours.map((x) => x.decode_overhead_pct ?? 0)).toFixed(1)}%`);
  if (overhead.length) lines.push('', `Share of xglm-node's decode time spent outside ggml's graph computation (sampling, JS↔native crossings, detokenization, graph building): ${overhead.join(', ')}.`);
  // Only float weights: integer dot products of quantized types are not FP32 FMAs.
  const prefillMax = report.rows.filter((r) => r.type === 'f16' || r.type === 'f32' || r.type === 'bf16').map((r) => {
    const peak = (mc.peakGflops[r.threads] ?? 0) * 1e9;
    const tps = median(r.ours.map((x) => x.prefill[512] ?? 0));
    return `${r.type}/${r.threads}t ${((tps * flopsPerToken(r.bytesPerToken, r.type)) / peak * 100).toFixed(0)}%`;
  });
  if (prefillMax.length) lines.push('', `Prefill (512 tokens) of float models as a share of peak FP32 FMA throughput (2 FLOPs per weight per token): ${prefillMax.join(', ')}.`);
  if (report.scoring) {
    const s = report.scoring;
    lines.push(
      '',
      `Scoring ${s.items} COPA-shaped items (premise + 2 choices; ${s.type}, ${s.threads} threads): score() of each full text (the model card's recipe) ${(s.scoreEachMs / 1000).toFixed(1)} s; scoreContinuations with full-text totals ${(s.scoreContinuationsMs / 1000).toFixed(1)} s (**${(s.scoreEachMs / s.scoreContinuationsMs).toFixed(2)}×** faster)` +
        (s.chooseMs !== undefined
          ? `; scoreContinuations with \`scorePrefix: false\` (what the decision needs) ${(s.chooseMs / 1000).toFixed(1)} s (**${(s.scoreEachMs / s.chooseMs).toFixed(2)}×** faster; decisions ${s.chooseAgrees ? 'equal to the recipe\'s on every item' : '**differ** from the recipe\'s'})`
          : '') +
        (s.peerEvaluateEachMs !== undefined
          ? `; node-llama-cpp only evaluating each full text (\`evaluateWithoutGeneratingNewTokens\`: no logits rows, so no scores — a lower bound of scoring with it) ${(s.peerEvaluateEachMs / 1000).toFixed(1)} s.`
          : '.'),
    );
  }
  lines.push('', '![prefill tokens/s by prompt length](benchmarks/latest.svg)', '', 'Raw figures: [benchmarks/latest.json](benchmarks/latest.json).', END);

  const doc = path.join(packageRoot, 'docs', 'benchmarks.md');
  let text = fs.existsSync(doc) ? fs.readFileSync(doc, 'utf8') : '# Benchmarks\n\n## Latest run\n\n' + BEGIN + '\n' + END + '\n';
  const a = text.indexOf(BEGIN);
  const b = text.indexOf(END);
  const block = lines.join('\n');
  text = a >= 0 && b > a ? text.slice(0, a) + block + text.slice(b + END.length) : `${text}\n${block}\n`;
  fs.writeFileSync(doc, text);
  process.stderr.write(`bench: wrote docs/benchmarks.md, docs/benchmarks/latest.{json,svg}\n`);
}

/**
 * The decode-gemv ops (native/engine/ops/decode-gemv.cpp) against ggml's mul_mat on the same file:
 * single-token decode steps of a random-weight q4_0 model (d_model 256) whose token_embd the
 * converter makes Q6_K (the logits op) and whose layer weights ggml repacks at load (the Q4_0
 * layer op: qkv, attention output, ffn up and down). Each run is a child process so
 * XGLM_NO_CUSTOM_GEMV and XGLM_LOG apply from the start; XGLM_LOG's lines show which path ran.
 *
 * Tolerance: the ops quantize h as mul_mat does (Q8_K by ggml's own quantizer for Q6_K, Q8_0
 * for Q4_0) and compute the same exact integer block dots; only the order in which the float
 * block sums are added may differ from the ggml variant in use (its AVX-512 and AVX2 kernels
 * sum in different orders; measured max |diff| 0 on an AVX-512 Zen 4 and an AVX2 Zen 3). Such a
 * reordering moves a row by a few float ulps of its terms: we allow 1e-5 of the row's largest
 * logit, which any wrong layout, scale or quantization exceeds by orders of magnitude (q4_0 vs
 * f32 weights differ by ~2e-2). Where the ops do not run (backendInfo().kernels 'none': a ggml
 * variant without AVX2, arm64) the comparison would be mul_mat against itself, so that test
 * is skipped, visibly. Against the f32 file (same checkpoint) only a loose agreement holds, as
 * q4_0 layers change the logits (measured: max |diff| 1.8% of the largest logit, top-1 equal
 * in 9/9 rows; asserted: < 10% and 2/3 of the rows).
 */
import test, { type ExecutionContext } from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { GgmlType, GgufReader } from '../src/gguf/index.js';
import { backendInfo } from '../src/index.js';
import { maxDiff, randomGguf, tmpPath } from './helpers/fixtures.js';
import { runIf } from './helpers/skip.js';

const root = path.join(__dirname, '..');
const shape = { dModel: 256, nLayers: 2, nHeads: 4, ffnDim: 512, vocabSize: 3000, maxPositions: 64, seed: 11 };
const prompt = [2, 17, 301, 999];
const steps = [40, 7, 1234, 2500, 88, 5, 2999, 600];
const LOG_LINE = 'logits through the Q6_K decode-gemv op';
// 2 layers × 4 products, once per graph build
const LAYER_LOG_LINE = `${2 * 4} layer products through the Q4_0 decode-gemv op`;

// Loads `file`, evaluates the prompt (last logits only), then one token per step; writes every
// logits row (prompt's last, then each step's) to `out` as float32.
const childSource = `
import fs from 'node:fs';
import { openEngineModel } from ${JSON.stringify(path.join(root, 'src', 'engine', 'model.js'))};
const [file, threads, out] = process.argv.slice(2);
const prompt = ${JSON.stringify(prompt)};
const steps = ${JSON.stringify(steps)};
(async () => {
  const model = await openEngineModel(file!);
  const ctx = await model.createContext({ threads: Number(threads), contextSize: 64 });
  const rows: Float32Array[] = [];
  await ctx.evaluate({ tokens: prompt, positions: prompt.map((_, i) => i) });
  rows.push(await ctx.getLogits(prompt.length - 1));
  for (const [i, token] of steps.entries()) {
    await ctx.evaluate({ tokens: [token], positions: [prompt.length + i] });
    rows.push(await ctx.getLogits(0));
  }
  const all = new Float32Array(rows.reduce((n, r) => n + r.length, 0));
  rows.forEach((r, i) => all.set(r, i * r.length));
  fs.writeFileSync(out!, new Uint8Array(all.buffer));
  await ctx.dispose();
  model.dispose();
})();
`;
const childFile = tmpPath('gemv-decode-rows.ts');
fs.writeFileSync(childFile, childSource);

interface Run {
  rows: Float32Array[];
  stderr: string;
}

let runs = 0;
function decodeRows(file: string, threads: number, env: Record<string, string>): Run {
  const out = tmpPath(`gemv-rows-${runs++}.bin`);
  const childEnv: NodeJS.ProcessEnv = { ...process.env, XGLM_LOG: '1', ...env };
  if (!('XGLM_NO_CUSTOM_GEMV' in env)) delete childEnv.XGLM_NO_CUSTOM_GEMV;
  const r = spawnSync(process.execPath, ['--import', 'tsx', childFile, file, String(threads), out], { cwd: root, env: childEnv, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`decode child failed (${r.status}): ${r.stderr}`);
  const buf = fs.readFileSync(out);
  const all = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
  const nRows = steps.length + 1;
  const nVocab = all.length / nRows;
  return { rows: Array.from({ length: nRows }, (_, i) => all.subarray(i * nVocab, (i + 1) * nVocab)), stderr: r.stderr };
}

const files = (async () => ({ q4: await randomGguf(shape, 'q4_0'), f32: await randomGguf(shape, 'f32') }))();

test('the q4_0 file of a 256-wide model has a Q6_K token_embd (the op applies)', async (t) => {
  const r = GgufReader.open((await files).q4);
  t.teardown(() => r.close());
  t.is(r.tensor('token_embd.weight')!.type, GgmlType.Q6_K);
});

// the children inherit XGLM_CPU_VARIANT, so they run the kernels this process reports
const KERNELS = backendInfo().kernels;
const opTest = runIf(KERNELS !== 'none', 'the decode-gemv ops do not run with this ggml CPU variant (kernels: none)');

test('without the ops (XGLM_NO_CUSTOM_GEMV=1, F32 weights or kernels none) decode runs through mul_mat and stays near the f32 file', async (t) => {
  const { q4, f32 } = await files;
  const ggml = decodeRows(q4, 2, { XGLM_NO_CUSTOM_GEMV: '1' });
  const exact = decodeRows(f32, 2, {});
  t.false(ggml.stderr.includes('decode-gemv op'), 'XGLM_NO_CUSTOM_GEMV=1 keeps mul_mat');
  t.false(exact.stderr.includes('decode-gemv op'), 'never for F32 weights');
  if (KERNELS === 'none') t.false(decodeRows(q4, 2, {}).stderr.includes('decode-gemv op'), 'kernels none: mul_mat only');
  nearF32(t, ggml.rows, exact.rows, 'mul_mat');
});

opTest('decode logits: the Q6_K and Q4_0 ops equal ggml mul_mat (1 and 2 threads) and stay near the f32 file', async (t) => {
  const { q4, f32 } = await files;
  const custom2 = decodeRows(q4, 2, {});
  const custom1 = decodeRows(q4, 1, {});
  const ggml = decodeRows(q4, 2, { XGLM_NO_CUSTOM_GEMV: '1' });
  const exact = decodeRows(f32, 2, {});

  // the op ran for the q4_0 file by default
  t.true(custom2.stderr.includes(LOG_LINE), 'custom op used by default');
  t.true(custom1.stderr.includes(LOG_LINE));
  t.true(custom2.stderr.includes(LAYER_LOG_LINE), 'Q4_0 layer op used by default (repacked weights)');
  t.true(custom1.stderr.includes(LAYER_LOG_LINE));
  t.false(ggml.stderr.includes('decode-gemv op'), 'XGLM_NO_CUSTOM_GEMV=1 keeps mul_mat');
  t.false(exact.stderr.includes('decode-gemv op'), 'never for F32 weights');

  let worst = 0;
  for (let i = 0; i < ggml.rows.length; i++) {
    const ref = ggml.rows[i]!;
    for (const got of [custom2.rows[i]!, custom1.rows[i]!]) {
      const { diff, scale } = maxDiff(got, ref);
      worst = Math.max(worst, diff / scale);
      t.true(diff <= 1e-5 * scale, `row ${i}: max|diff| ${diff} vs max|logit| ${scale}`);
    }
  }
  t.log(`op vs mul_mat (kernels ${KERNELS}): max|diff|/max|logit| ${worst.toExponential(2)}`);
  nearF32(t, custom2.rows, exact.rows, 'op');
});

// Batched decode (issue: concurrent generations): 8 sequences, each with its own prompt, then
// steps of one token per sequence in ONE evaluation (the rows of a batched step, every row with
// logits), against each sequence decoded alone in a context of its own. The products of a
// batched step take 8 columns (decode-gemv's multi-column kernels, AVX2 and, where the variant
// runs it, VNNI) and attention reads each row's own cells, so every row is computed as alone:
// the logits must be equal bit for bit.
const SEQS = 8;
const batchedChildSource = `
import fs from 'node:fs';
import { openEngineModel } from ${JSON.stringify(path.join(root, 'src', 'engine', 'model.js'))};
const [file, mode, out] = process.argv.slice(2);
const seqs = ${SEQS};
const prompts = Array.from({ length: seqs }, (_, s) => [2, 17 + s, 301 + 7 * s, 999 - s, 40 + s].slice(0, 2 + (s % 4)));
const steps = ${JSON.stringify(steps)};
const tokenAt = (s: number, i: number) => (steps[i]! + 97 * s) % 3000;
(async () => {
  const model = await openEngineModel(file!);
  const rows: Float32Array[] = [];  // step-major: step i, then sequence s
  if (mode === 'batched') {
    const ctx = await model.createContext({ threads: 2, contextSize: 256 });
    for (const [s, p] of prompts.entries()) await ctx.evaluate({ tokens: p, positions: p.map((_, i) => i), seqIds: p.map(() => s) });
    for (let i = 0; i < steps.length; i++) {
      const ids = prompts.map((_, s) => s);
      await ctx.evaluate({ tokens: ids.map((s) => tokenAt(s, i)), positions: ids.map((s) => prompts[s]!.length + i), seqIds: ids, logits: 'all' });
      for (const s of ids) rows.push(await ctx.getLogits(s));
    }
    await ctx.dispose();
  } else {
    const alone: Float32Array[][] = [];
    for (const [s, p] of prompts.entries()) {
      const ctx = await model.createContext({ threads: 2, contextSize: 256 });
      await ctx.evaluate({ tokens: p, positions: p.map((_, i) => i) });
      alone.push([]);
      for (let i = 0; i < steps.length; i++) {
        await ctx.evaluate({ tokens: [tokenAt(s, i)], positions: [p.length + i] });
        alone[s]!.push(await ctx.getLogits(0));
      }
      await ctx.dispose();
    }
    for (let i = 0; i < steps.length; i++) for (let s = 0; s < seqs; s++) rows.push(alone[s]![i]!);
  }
  const all = new Float32Array(rows.reduce((n, r) => n + r.length, 0));
  rows.forEach((r, i) => all.set(r, i * r.length));
  fs.writeFileSync(out!, new Uint8Array(all.buffer));
  model.dispose();
})();
`;
const batchedChildFile = tmpPath('gemv-batched-rows.ts');
fs.writeFileSync(batchedChildFile, batchedChildSource);

function batchedRows(file: string, mode: 'batched' | 'alone'): Run {
  const out = tmpPath(`gemv-rows-${runs++}.bin`);
  const childEnv: NodeJS.ProcessEnv = { ...process.env, XGLM_LOG: '1' };
  delete childEnv.XGLM_NO_CUSTOM_GEMV;
  const r = spawnSync(process.execPath, ['--import', 'tsx', batchedChildFile, file, mode, out], { cwd: root, env: childEnv, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`batched child failed (${r.status}): ${r.stderr}`);
  const buf = fs.readFileSync(out);
  const all = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
  const nRows = steps.length * SEQS;
  const nVocab = all.length / nRows;
  return { rows: Array.from({ length: nRows }, (_, i) => all.subarray(i * nVocab, (i + 1) * nVocab)), stderr: r.stderr };
}

// Only where the ops run: ggml's own nodes give a batched row the bits of the row alone on some
// variants, not on all (under sandybridge and ivybridge its AVX kernels round an 8-column
// product differently from a one-column one: 8 of 64 rows differed, most by 1 ulp, one by 2e-3
// of its largest logit after a quantization step flipped); batched.test.ts holds ggml's path to
// the oracle's margins instead.
opTest('batched decode steps of 8 sequences (q4_0 file, F16 cache) give each sequence the logits it gets alone, bit for bit', async (t) => {
  const { q4 } = await files;
  const batched = batchedRows(q4, 'batched');
  const alone = batchedRows(q4, 'alone');
  t.true(batched.stderr.includes(LOG_LINE), 'the 8 logits rows of a step through the Q6_K op');
  t.true(batched.stderr.includes(LAYER_LOG_LINE), 'the 8-token steps through the Q4_0 layer op');
  let differing = 0;
  for (let i = 0; i < batched.rows.length; i++) {
    const a = batched.rows[i]!;
    const b = alone.rows[i]!;
    let same = a.length === b.length;
    for (let k = 0; same && k < a.length; k++) same = Object.is(a[k], b[k]);
    if (!same) {
      differing++;
      const { diff, scale } = maxDiff(a, b);
      t.log(`step ${Math.floor(i / SEQS)}, sequence ${i % SEQS}: max|diff| ${diff} of max|logit| ${scale}`);
    }
  }
  t.is(differing, 0, `${differing} of ${batched.rows.length} logits rows differ from the sequence decoded alone`);
});

// q8_0 files where the plan has the AVX-512 VNNI products: the layer weights are rearranged at
// load into 8-row groups (decode-gemv.h) and every layer product, prompt and decode alike, runs
// through that kernel. It makes ggml's integers per block and adds the float products in ggml's
// repacked kernels' order, not in its plain Q8_0 kernels' order, so against ggml's nodes
// (XGLM_NO_CUSTOM_GEMV=1 at load: plain rows) it holds within the tolerance above (1e-5 of the
// row's largest logit; a wrong layout or offset is off by orders of magnitude), with 1 and 2
// threads giving the same bits; batched steps within the same tolerance of the rows alone.
const VNNI = backendInfo().kernelPlan.vnni;
const q8Test = runIf(KERNELS !== 'none' && VNNI, 'the Q8_0 layout of the AVX-512 VNNI kernel is not used without VNNI (plan.vnni false)');
const Q8_LAYER_LOG_LINE = `${2 * 4} layer products through the Q8_0 decode-gemv op`;
const q8File = (async () => randomGguf(shape, 'q8_0'))();

q8Test('q8_0 file, VNNI plan: every layer product through the 8-row Q8_0 kernel, near ggml mul_mat, batched steps near the rows alone', async (t) => {
  const q8 = await q8File;
  const ours = decodeRows(q8, 2, {});
  const ours1 = decodeRows(q8, 1, {});
  const ggml = decodeRows(q8, 2, { XGLM_NO_CUSTOM_GEMV: '1' });
  // one line per graph build: the prompt's (4 tokens), then the decode step's (reused after)
  const builds = ours.stderr.split('\n').filter((l) => l.includes(Q8_LAYER_LOG_LINE)).length;
  t.true(builds >= 2, `the prompt and the decode steps through the Q8_0 op (${builds} builds said so)`);
  t.false(ggml.stderr.includes('decode-gemv op'), 'XGLM_NO_CUSTOM_GEMV=1 at load keeps the plain rows and mul_mat');
  let worst = 0;
  for (let i = 0; i < ggml.rows.length; i++) {
    for (const got of [ours.rows[i]!, ours1.rows[i]!]) {
      const { diff, scale } = maxDiff(got, ggml.rows[i]!);
      worst = Math.max(worst, diff / scale);
      t.true(diff <= 1e-5 * scale, `row ${i}: max|diff| ${diff} vs max|logit| ${scale}`);
    }
    t.true(ours.rows[i]!.every((v, k) => Object.is(v, ours1.rows[i]![k])), `row ${i}: 1 and 2 threads differ`);
  }
  t.log(`Q8_0 8-row kernel vs mul_mat: max|diff|/max|logit| ${worst.toExponential(2)}`);
  const batched = batchedRows(q8, 'batched');
  const alone = batchedRows(q8, 'alone');
  t.true(batched.stderr.includes(Q8_LAYER_LOG_LINE));
  // the logits rows come from the F16 output matrix through ggml's mul_mat, which rounds an
  // 8-column product differently from a one-column one: rows alone within the same tolerance
  let worstBatched = 0;
  batched.rows.forEach((a, i) => {
    const { diff, scale } = maxDiff(a, alone.rows[i]!);
    worstBatched = Math.max(worstBatched, diff / scale);
    t.true(diff <= 1e-5 * scale, `batched row ${i}: max|diff| ${diff} vs max|logit| ${scale}`);
  });
  t.log(`batched vs alone (F16 logits by mul_mat): max|diff|/max|logit| ${worstBatched.toExponential(2)}`);
});

// q4_k_m files where the plan has the AVX-512 VNNI products: their K-quant layer weights (Q4_K as
// ggml repacks it, Q5_K, Q6_K in plain rows) go through decode-gemv one product at a time (the
// layer mixes types, so it is not fused). Q5_K and Q6_K make ggml's bits, Q4_K ggml's integers
// with another float order: against ggml's nodes within the same 1e-5 of the largest logit.
const qkFile = (async () => randomGguf(shape, 'q4_k_m'))();
q8Test('q4_k_m file, VNNI plan: the K-quant layer products through decode-gemv, near ggml mul_mat, batched steps near the rows alone', async (t) => {
  const qk = await qkFile;
  const ours = decodeRows(qk, 2, {});
  const ggml = decodeRows(qk, 2, { XGLM_NO_CUSTOM_GEMV: '1' });
  t.regex(ours.stderr, /xglm: 8 products of unfused layers through the decode-gemv op/, 'all 8 layer products through the op');
  t.false(ggml.stderr.includes('decode-gemv op'), 'XGLM_NO_CUSTOM_GEMV=1 keeps mul_mat');
  let worst = 0;
  for (let i = 0; i < ggml.rows.length; i++) {
    const { diff, scale } = maxDiff(ours.rows[i]!, ggml.rows[i]!);
    worst = Math.max(worst, diff / scale);
    t.true(diff <= 1e-5 * scale, `row ${i}: max|diff| ${diff} vs max|logit| ${scale}`);
  }
  t.log(`K-quant products vs mul_mat: max|diff|/max|logit| ${worst.toExponential(2)}`);
  const batched = batchedRows(qk, 'batched');
  const alone = batchedRows(qk, 'alone');
  let worstBatched = 0;
  batched.rows.forEach((a, i) => {
    const { diff, scale } = maxDiff(a, alone.rows[i]!);
    worstBatched = Math.max(worstBatched, diff / scale);
    t.true(diff <= 1e-5 * scale, `batched row ${i}: max|diff| ${diff} vs max|logit| ${scale}`);
  });
  t.log(`batched vs alone: max|diff|/max|logit| ${worstBatched.toExponential(2)}`);
});

/** q4_0 layers against f32 weights: same argmax mostly, differences a fraction of the range. */
function nearF32(t: ExecutionContext, rows: Float32Array[], exact: Float32Array[], label: string): void {
  let worstF32 = 0;
  let top1Same = 0;
  for (let i = 0; i < rows.length; i++) {
    const { diff, scale } = maxDiff(rows[i]!, exact[i]!);
    worstF32 = Math.max(worstF32, diff / scale);
    if (argmaxOf(rows[i]!) === argmaxOf(exact[i]!)) top1Same++;
  }
  t.log(`${label} vs f32 file: max|diff|/max|logit| ${worstF32.toFixed(3)}, top-1 same in ${top1Same}/${rows.length} rows`);
  t.true(worstF32 < 0.1, `q4_0 vs f32 relative max diff ${worstF32}`);
  t.true(3 * top1Same >= 2 * rows.length, `top-1 equal to f32 in only ${top1Same}/${rows.length} rows`);
}

function argmaxOf(a: Float32Array): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i]! > a[best]!) best = i;
  return best;
}

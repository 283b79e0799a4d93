/**
 * Lifecycle: abort during a long prompt, dispose during work, a context outliving its model,
 * worker threads that exit mid-evaluation, damaged files, the q8_0 KV cache.
 * Uses a random-weight model with a 2048-token context (the fixtures' is 128/256).
 */
import test from 'ava';
import { runIf } from './helpers/skip.js';
import fs from 'node:fs';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { openEngineModel } from '../src/engine/model.js';
import { XglmError } from '../src/errors.js';
import { GgufWriter, kv } from '../src/gguf/index.js';
import { native } from '../src/native.js';
import { packageRoot } from '../src/paths.js';
import { FIXTURE_NAMES, argmax, fixtureGguf, maxDiff, randomGguf, tmpPath } from './helpers/fixtures.js';

const range = (n: number, start = 0) => Array.from({ length: n }, (_, i) => start + i);
const SHAPE = { dModel: 256, nLayers: 4, nHeads: 4, ffnDim: 1024, maxPositions: 2048, vocabSize: 2008 };
const longModelFile = () => randomGguf(SHAPE, 'f32');
const prompt = (n: number) => range(n).map((i) => 4 + ((i * 7919) % 2000));

test('abort during a 1,024-token prompt rejects with ERR_XGLM_ABORTED, and the context stays usable', async (t) => {
  const model = await openEngineModel(await longModelFile());
  const ctx = await model.createContext({ kvType: 'f16', batchSize: 512 });
  const tokens = prompt(1024);

  let start = performance.now();
  await ctx.evaluate({ tokens, positions: range(1024) });
  const full = performance.now() - start;
  t.log(`full 1,024-token prompt: ${full.toFixed(0)} ms (${(full / SHAPE.nLayers).toFixed(0)} ms per layer on average)`);
  await ctx.kvClear();

  const controller = new AbortController();
  start = performance.now();
  const pending = ctx.evaluate({ tokens, positions: range(1024) }, { signal: controller.signal });
  setTimeout(() => controller.abort(), full / 4);
  const err = await t.throwsAsync(pending, { instanceOf: XglmError });
  const abortedAt = performance.now();
  t.is(err!.code, 'ERR_XGLM_ABORTED');
  t.log(`aborted after ${(abortedAt - start).toFixed(0)} ms, ${(abortedAt - start - full / 4).toFixed(1)} ms after the signal`);

  // the cache holds whole ubatches only; a fresh sequence evaluates as usual
  const kept = await ctx.kvSeqPosMax(0);
  t.true(kept === -1 || (kept + 1) % 512 === 0, `positions kept: ${kept + 1}`);
  await ctx.evaluate({ tokens: tokens.slice(0, 8), positions: range(8), seqIds: Array(8).fill(1) });
  t.is((await ctx.getLogits(7)).length, SHAPE.vocabSize);

  // an already-aborted signal never starts
  const err2 = await t.throwsAsync(ctx.evaluate({ tokens: [5], positions: [9], seqIds: [1] }, { signal: AbortSignal.abort() }));
  t.is((err2 as XglmError).code, 'ERR_XGLM_ABORTED');
  await ctx.dispose();
  model.dispose();
});

test('a q8_0 KV cache (head size 64) gives the f32-cache top-1 and close logits', async (t) => {
  const model = await openEngineModel(await longModelFile());
  const tokens = prompt(200);
  const logits: Float32Array[][] = [];
  for (const kvType of ['f32', 'q8_0'] as const) {
    const ctx = await model.createContext({ kvType, threads: 1, contextSize: 256 });
    await ctx.evaluate({ tokens, positions: range(200), logits: 'all' });
    const rows: Float32Array[] = [];
    for (const i of [0, 50, 199]) rows.push(await ctx.getLogits(i));
    logits.push(rows);
    await ctx.dispose();
  }
  for (let k = 0; k < 3; k++) {
    const { diff, scale } = maxDiff(logits[1]![k]!, logits[0]![k]!);
    t.log(`row ${k}: q8_0-cache maxdiff ${diff.toExponential(2)} of max ${scale.toFixed(3)}`);
    t.true(diff <= 0.05 * scale);
    t.is(argmax(logits[1]![k]!), argmax(logits[0]![k]!));
  }
  model.dispose();
});

test('dispose during an evaluation: running and queued work reject, later calls reject ERR_XGLM_DISPOSED', async (t) => {
  const model = await openEngineModel(await longModelFile());
  const ctx = await model.createContext({ kvType: 'f16', threads: 1 });
  const running = ctx.evaluate({ tokens: prompt(1024), positions: range(1024) });
  const queued = ctx.evaluate({ tokens: [5], positions: [0], seqIds: [1] });
  await new Promise((r) => setTimeout(r, 30));
  await ctx.dispose();
  const e1 = await t.throwsAsync(running, { instanceOf: XglmError });
  t.true(['ERR_XGLM_ABORTED', 'ERR_XGLM_DISPOSED'].includes(e1!.code), e1!.code);
  const e2 = await t.throwsAsync(queued, { instanceOf: XglmError });
  t.true(['ERR_XGLM_ABORTED', 'ERR_XGLM_DISPOSED'].includes(e2!.code), e2!.code);
  const e3 = await t.throwsAsync(ctx.kvClear(), { instanceOf: XglmError });
  t.is(e3!.code, 'ERR_XGLM_DISPOSED');
  await ctx.dispose(); // twice is fine
  model.dispose();
});

test('a context keeps the weights alive after model.dispose()', async (t) => {
  const model = await openEngineModel(await fixtureGguf('tiny-a', 'f32'));
  const ctx = await model.createContext({ threads: 1 });
  await ctx.evaluate({ tokens: [2, 5], positions: [0, 1] });
  const before = await ctx.getLogits(1);
  model.dispose();
  t.is(t.throws(() => model.hparams)!.message.includes('disposed'), true);
  await ctx.kvClear();
  await ctx.evaluate({ tokens: [2, 5], positions: [0, 1] });
  t.deepEqual(await ctx.getLogits(1), before);
  await ctx.dispose();
});

test('worker threads that exit or are terminated mid-evaluation leave the process healthy', async (t) => {
  const file = await longModelFile();
  // The addon native() loads when XGLM_ADDON_PATH names one (e.g. the arm64 prebuild under qemu).
  const addon = process.env.XGLM_ADDON_PATH ? path.resolve(process.env.XGLM_ADDON_PATH) : path.join(packageRoot, 'build', 'Release', 'xglm.node');
  t.true(fs.existsSync(addon));
  const script = `
    const { parentPort, workerData } = require('node:worker_threads');
    const addon = require(workerData.addon);
    (async () => {
      const model = await addon.Model.load(workerData.file);
      const ctx = await addon.Context.create(model, { threads: 1 });
      const n = 1024;
      const tokens = Int32Array.from({ length: n }, (_, i) => 4 + i % 2000);
      ctx.evaluate(tokens, Int32Array.from({ length: n }, (_, i) => i), new Int32Array(n), new Uint8Array(n)).catch(() => {});
      parentPort.postMessage('started');
      if (workerData.exit) setTimeout(() => process.exit(0), 20);
    })();
  `;
  for (const exit of [false, true]) {
    const w = new Worker(script, { eval: true, workerData: { addon, file, exit } });
    await new Promise<void>((resolve, reject) => {
      w.once('message', () => resolve());
      w.once('error', reject);
    });
    if (!exit) await new Promise((r) => setTimeout(r, 20));
    const code = exit ? await new Promise<number>((r) => w.once('exit', r)) : await w.terminate();
    t.log(`worker ${exit ? 'exited' : 'terminated'} with code ${code}`);
  }
  // the addon still works here
  const model = await openEngineModel(await fixtureGguf('tiny-a', 'f32'));
  const ctx = await model.createContext({ threads: 1 });
  await ctx.evaluate({ tokens: [2], positions: [0] });
  t.is((await ctx.getLogits(0)).length, 2008);
  await ctx.dispose();
});

test('damaged or foreign files are refused with ERR_XGLM_MODEL_LOAD and a message that says what is wrong', async (t) => {
  const cases: Array<[string, () => Promise<string>, RegExp]> = [
    ['missing file', async () => tmpPath('does-not-exist.gguf'), /cannot open .*No such file/],
    ['not a GGUF', async () => {
      const f = tmpPath('garbage.gguf');
      fs.writeFileSync(f, Buffer.from('this is not a gguf file at all, just text'));
      return f;
    }, /not a valid GGUF/],
    ['truncated', async () => {
      const src = fs.readFileSync(await fixtureGguf('tiny-a', 'f32'));
      const f = tmpPath('truncated.gguf');
      fs.writeFileSync(f, src.subarray(0, Math.floor(src.length * 0.7)));
      return f;
    }, /truncated|not a valid GGUF/],
    ['another architecture', async () => {
      const f = tmpPath('llama.gguf');
      const w = await GgufWriter.create(f, [kv.str('general.architecture', 'llama')], []);
      await w.finish();
      return f;
    }, /'llama' model; xglm-node runs only architecture 'xglm'/],
    ['missing hyperparameter', async () => {
      const f = tmpPath('nohp.gguf');
      const w = await GgufWriter.create(f, [kv.str('general.architecture', 'xglm')], []);
      await w.finish();
      return f;
    }, /xglm.context_length is missing/],
  ];
  for (const [label, make, re] of cases) {
    const err = await t.throwsAsync(openEngineModel(await make()), { instanceOf: XglmError }, label);
    t.is(err!.code, 'ERR_XGLM_MODEL_LOAD', label);
    t.regex(err!.message, re, label);
    t.log(`${label}: ${err!.message}`);
  }
});

test('loading reports progress up to 1; useRepack: false repacks nothing', async (t) => {
  const seen: number[] = [];
  const model = await openEngineModel(await fixtureGguf('tiny-b', 'q4_0'), { onProgress: (f) => seen.push(f) });
  t.true(seen.length >= 2);
  t.is(seen[seen.length - 1], 1);
  t.true(seen.every((f, i) => f >= 0 && f <= 1 && (i === 0 || f >= seen[i - 1]!)));
  model.dispose();
  const plain = await openEngineModel(await fixtureGguf('tiny-b', 'q4_0'), { useRepack: false });
  t.true(plain.tensors().every((x) => x.buffer !== 'CPU_REPACK'));
  plain.dispose();
});

/**
 * Which Q4_0 weights ggml's CPU_REPACK buffer takes, as ggml_repack_get_optimal_repack_type
 * (deps/ggml/src/ggml-cpu/repack.cpp) decides it from the features the loaded ggml CPU code was
 * built with (backendInfo().features lists ggml_cpu_has_*, compile-time for the variant in use):
 * AVX2, or SVE with int8 matmul and 256-bit vectors (SVE_CNT 32) -> q4_0 8x8, rows % 8 == 0;
 * NEON with int8 matmul or dot product -> q4_0 4x8 / 4x4, rows % 4 == 0. Only when ggml was
 * built with its repack code (feature REPACK). The engine offers it the layers' four product
 * weights (native/engine/model.cpp; the tied token_embd is read by get_rows too and stays mapped).
 * Undefined where this test cannot tell (RISC-V, other CPUs): the test is then skipped, visibly.
 */
/** rowMultiple 0: ggml repacks no q4_0 weight here. */
function q4_0RepackRule(features: readonly string[]): { rowMultiple: number; why: string } | { skip: string } {
  const has = (f: string) => features.includes(f);
  if (!has('REPACK')) return { skip: 'this ggml build has no CPU repack code (feature REPACK missing)' };
  if (has('AVX2')) return { rowMultiple: 8, why: 'AVX2: q4_0_8x8_q8_0 for row counts divisible by 8' };
  // SVE with int8 matmul: 8x8 when the vector is 256-bit (SVE_CNT 32, a value the names list
  // does not carry), else the NEON 4x8 below; row counts divisible by 8 are taken either way
  if (has('SVE') && has('MATMUL_INT8')) return { rowMultiple: 8, why: 'SVE with int8 matmul: q4_0_8x8 or 4x8 for row counts divisible by 8' };
  if (has('NEON') && (has('MATMUL_INT8') || has('DOTPROD'))) return { rowMultiple: 4, why: 'NEON with int8 matmul or dot product: q4_0_4x8 / 4x4 for row counts divisible by 4' };
  if (process.arch === 'x64') return { rowMultiple: 0, why: `the ggml variant in use (${native().backendInfo().variant}) has no AVX2 code: no q4_0 weight is repacked` };
  return { skip: `ggml's Q4_0 repack rule for ${process.arch} with features ${features.join(' ') || 'none'} is not modelled here` };
}

const rule = q4_0RepackRule(native().backendInfo().features);
const LAYER_PRODUCTS = /^blk\.\d+\.(attn_qkv|attn_output|ffn_up|ffn_down)\.weight$/;
runIf('rowMultiple' in rule, 'skip' in rule ? rule.skip : '')(
  `q4_0 files: exactly the q4_0 layer product weights ggml's rule picks are repacked (${'why' in rule ? rule.why : 'rule unknown here'})`,
  async (t) => {
    if (!('rowMultiple' in rule)) return;
    for (const name of FIXTURE_NAMES) {
      const model = await openEngineModel(await fixtureGguf(name, 'q4_0'));
      const tensors = model.tensors();
      const expected = tensors
        .filter((x) => rule.rowMultiple > 0 && LAYER_PRODUCTS.test(x.name) && x.type === 'q4_0' && x.shape.length === 2 && x.shape[1]! % rule.rowMultiple === 0)
        .map((x) => x.name);
      const repacked = tensors.filter((x) => x.buffer === 'CPU_REPACK').map((x) => x.name);
      const layers = tensors.filter((x) => LAYER_PRODUCTS.test(x.name)).length;
      t.log(`${name}: ${repacked.length} repacked tensors (${[...new Set(tensors.filter((x) => x.buffer === 'CPU_REPACK').map((x) => x.type))].join(', ')}) of ${layers} layer products; owned ${model.native.ownedBytes} bytes of ${model.native.mappedBytes} mapped`);
      // every layer product of the fixtures is q4_0 with a row count divisible by 8: all of them
      if (rule.rowMultiple > 0) t.is(expected.length, layers, `${name}: the q4_0 file's layer products are q4_0 with rows divisible by ${rule.rowMultiple}`);
      t.deepEqual(repacked, expected, name);
      model.dispose();
    }
  },
);

test('two contexts over one model compute at the same time and agree', async (t) => {
  const model = await openEngineModel(await longModelFile());
  const [a, b] = await Promise.all([0, 1].map(() => model.createContext({ kvType: 'f32', threads: 1, contextSize: 256 })));
  const tokens = prompt(200);
  await Promise.all([a!, b!].map((c) => c.evaluate({ tokens, positions: range(200) })));
  t.deepEqual(await a!.getLogits(199), await b!.getLogits(199));
  await Promise.all([a!.dispose(), b!.dispose()]);
  model.dispose();
});

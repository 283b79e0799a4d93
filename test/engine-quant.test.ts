/**
 * Quantized files.
 * 1. Against their dequantized twins (test/helpers/dequantized-twin.ts): the same file with every
 *    quantized tensor decoded to F32 by ggml, so the weights are identical and what is left is
 *    the rounding of the activations the quantized products do (8-bit blocks). The tolerance is
 *    derived from that rounding, calibrated by the F16 file against its own twin in the same run
 *    (twinTolerance in the helper); top-1 is checked where the twin's margin is clear.
 * 2. Against the F32 file: top-1 agreement over every position of every prompt (reported). Q8_0
 *    must reach 90% on both fixtures. The converter keeps the tied token_embd in F16 in q8_0 files
 *    for this: with a Q8_0 table tiny-b measured 87.5% (tiny-a 94.4%), and a study of the variants
 *    (docs/converting.md) showed the loss comes from the 8-bit embedding rows entering the
 *    residual stream more than from the output product. Q4_0's agreement is reported only: its
 *    kernels are checked by (1), its weights' rounding is no property of the engine.
 * Also the Q8_0 KV cache, which needs a head size divisible by 32: the fixtures' is 16, so it
 * must be refused clearly.
 */
import test from 'ava';
import { loadModel, type EngineContext } from '../src/engine.js';
import { XglmError } from '../src/errors.js';
import { allLogits, compareToTwin, dequantizedTwin, roundingRatio, twinTolerance } from './helpers/dequantized-twin.js';
import { FIXTURE_NAMES, fixtureGguf, golden, type FixtureName } from './helpers/fixture-gguf.js';

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

async function argmaxes(name: FixtureName, type: 'f32' | 'q8_0' | 'q4_0'): Promise<number[][]> {
  const model = await loadModel(await fixtureGguf(name, type));
  const ctx: EngineContext = await model.createContext({ kvType: type === 'f32' ? 'f32' : 'f16', threads: 1 });
  const out: number[][] = [];
  for (const p of golden(name).prompts) {
    await ctx.kvClear();
    await ctx.evaluate({ tokens: p.ids, positions: range(p.ids.length), logits: 'all' });
    const res = await ctx.logprobs(range(p.ids.length), p.ids.map(() => -1), 1);
    out.push(Array.from(res.topIds));
  }
  await ctx.dispose();
  model.dispose();
  return out;
}

for (const name of FIXTURE_NAMES) {
  test(`${name}: q8_0 and q4_0 logits equal their dequantized twins' within the activation rounding, and their top-1 where the margin is clear`, async (t) => {
    const prompts = golden(name).prompts;
    const f16 = await fixtureGguf(name, 'f16');
    const f16Twin = await dequantizedTwin(f16, { f16: true });
    const cal = compareToTwin(await allLogits(f16, prompts), await allLogits(f16Twin.file, prompts), prompts);
    t.log(`calibration: f16 vs its F32 twin, last rows max rel ${cal.lastRel.toExponential(2)} (abs ${cal.lastAbs.toFixed(3)})`);
    let checked = 0;
    for (const type of ['q8_0', 'q4_0'] as const) {
      const file = await fixtureGguf(name, type);
      const twin = await dequantizedTwin(file);
      const types = [...new Set(twin.decoded.map((x) => x.type))];
      const cmp = compareToTwin(await allLogits(file, prompts), await allLogits(twin.file, prompts), prompts);
      const ratio = roundingRatio(types);
      const tol = twinTolerance(ratio, cal.lastRel);
      t.log(
        `${type} (decoded ${types.join(', ')}; ratio ${ratio.toFixed(1)}): last rows max rel ${cmp.lastRel.toExponential(2)} of tolerance ${tol.toExponential(2)} (abs ${cmp.lastAbs.toFixed(3)}); ` +
          `top-1 checked at ${cmp.top1Checked}/${cmp.top1Rows} other rows, ${cmp.top1Mismatches.length} differ`,
      );
      t.true(twin.decoded.length > 0, `${type}: the twin decoded something`);
      t.true(cmp.lastRel <= tol, `${type}: ${cmp.lastRel} > ${tol}`);
      t.deepEqual(cmp.top1Mismatches, [], type);
      checked += cmp.top1Checked;
    }
    t.true(checked >= 2, `top-1 checked at ${checked} rows only`);
  });

  test(`${name}: q8_0 and q4_0 top-1 agreement with the f32 file over all positions`, async (t) => {
    const ref = await argmaxes(name, 'f32');
    // the f32 file's top-1 is PyTorch's (checked in engine.test.ts); confirm on the last rows
    golden(name).prompts.forEach((p, i) => t.is(ref[i]![p.ids.length - 1], p.last_logits.argmax));
    for (const type of ['q8_0', 'q4_0'] as const) {
      const got = await argmaxes(name, type);
      let same = 0;
      let total = 0;
      got.forEach((row, i) => row.forEach((id, j) => {
        total++;
        if (id === ref[i]![j]) same++;
      }));
      const pct = (100 * same) / total;
      t.log(`${type}: top-1 equal to f32 at ${same}/${total} positions (${pct.toFixed(1)}%)`);
      if (type === 'q8_0') t.true(pct >= 90, `${type} ${pct.toFixed(1)}% < 90%`);
    }
  });
}

test('a q8_0 KV cache is refused with a clear message when the head size is not a multiple of 32', async (t) => {
  const model = await loadModel(await fixtureGguf('tiny-a', 'f32'));
  const err = await t.throwsAsync(model.createContext({ kvType: 'q8_0', threads: 1 }), { instanceOf: XglmError });
  t.is(err!.code, 'ERR_XGLM_INVALID_ARGUMENT');
  t.regex(err!.message, /head size divisible by 32.*16/);
  model.dispose();
});


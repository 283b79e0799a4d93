/**
 * Quantized files.
 * 1. Against their dequantized twins (test/helpers/dequantized-twin.ts): the same file with every
 *    quantized tensor decoded to F32 by ggml, so the weights are identical and what is left is
 *    the rounding of the activations the quantized products do (8-bit blocks). The tolerance is
 *    derived from that rounding, calibrated by the F16 file against its own twin in the same run
 *    (twinTolerance in the helper); top-1 is checked where the twin's margin is clear.
 * 2. Against the F32 file: top-1 agreement of the quantized weights over every position of every
 *    prompt, measured through the twin so that it does not depend on the CPU's rounding (the
 *    file's own agreement is reported). Q8_0 must reach 90% on both fixtures. The converter keeps the tied token_embd in F16 in q8_0 files
 *    for this: with a Q8_0 table tiny-b measured 87.5% (tiny-a 94.4%), and a study of the variants
 *    (docs/converting.md) showed the loss comes from the 8-bit embedding rows entering the
 *    residual stream more than from the output product. Q4_0's agreement is reported only: its
 *    kernels are checked by (1), its weights' rounding is no property of the engine.
 * Also the Q8_0 KV cache, which needs a head size divisible by 32: the fixtures' is 16, so it
 * must be refused clearly.
 */
import test from 'ava';
import { openEngineModel } from '../src/engine/model.js';
import { XglmError } from '../src/errors.js';
import { allLogits, assertMatchesTwin, calibrateF16, dequantizedTwin } from './helpers/dequantized-twin.js';
import { FIXTURE_NAMES, argmax, fixtureGguf, golden, type FixtureName } from './helpers/fixtures.js';

for (const name of FIXTURE_NAMES) {
  test(`${name}: q8_0 and q4_0 logits equal their dequantized twins' within the activation rounding, and their top-1 where the margin is clear`, async (t) => {
    const prompts = golden(name).prompts;
    const cal = await calibrateF16(await fixtureGguf(name, 'f16'), prompts);
    t.log(`calibration: f16 vs its F32 twin, last rows max rel ${cal.lastRel.toExponential(2)} (abs ${cal.lastAbs.toFixed(3)})`);
    let checked = 0;
    for (const type of ['q8_0', 'q4_0'] as const) checked += await assertMatchesTwin(t, type, await fixtureGguf(name, type), prompts, cal.lastRel);
    t.true(checked >= 2, `top-1 checked at ${checked} rows only`);
  });

  test(`${name}: the q8_0 weights keep the f32 file's top-1 at >= 90% of all positions (through the dequantized twin)`, async (t) => {
    const prompts = golden(name).prompts;
    const ref = await allLogits(await fixtureGguf(name, 'f32'), prompts);
    // the f32 file's top-1 is PyTorch's (checked in engine.test.ts); confirm on the last rows
    prompts.forEach((p, i) => t.is(argmax(ref[i]![p.ids.length - 1]!), p.last_logits.argmax));
    for (const type of ['q8_0', 'q4_0'] as const) {
      const file = await fixtureGguf(name, type);
      // The weights' effect alone, measured through the twin (F32 products of the quantized
      // weights): the same on every CPU. The file itself adds the activation rounding of this
      // CPU's kernels, which flips near-ties differently per variant (tiny-b: 260-263 of 287
      // over the ggml variants of one CPU), so its agreement is reported, not asserted; its
      // kernels are checked against the twin above.
      const twin = await allLogits((await dequantizedTwin(file)).file, prompts);
      const got = await allLogits(file, prompts);
      let twinSame = 0;
      let fileSame = 0;
      let total = 0;
      ref.forEach((rows, p) => rows.forEach((row, r) => {
        total++;
        if (argmax(twin[p]![r]!) === argmax(row)) twinSame++;
        if (argmax(got[p]![r]!) === argmax(row)) fileSame++;
      }));
      const pct = (100 * twinSame) / total;
      t.log(`${type}: top-1 equal to f32 at ${twinSame}/${total} positions through the twin (${pct.toFixed(1)}%), ${fileSame}/${total} through this CPU's kernels`);
      if (type === 'q8_0') t.true(pct >= 90, `${type} ${pct.toFixed(1)}% < 90%`);
    }
  });
}

test('a q8_0 KV cache is refused with a clear message when the head size is not a multiple of 32', async (t) => {
  const model = await openEngineModel(await fixtureGguf('tiny-a', 'f32'));
  const err = await t.throwsAsync(model.createContext({ kvType: 'q8_0', threads: 1 }), { instanceOf: XglmError });
  t.is(err!.code, 'ERR_XGLM_INVALID_ARGUMENT');
  t.regex(err!.message, /head size divisible by 32.*16/);
  model.dispose();
});


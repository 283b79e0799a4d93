/**
 * Quantized files against the F32 run of the same fixture: top-1 agreement over every
 * position of every prompt (reported). Q8_0 must reach 90% on both fixtures. The converter
 * keeps the tied token_embd in F16 in q8_0 files for this: with a Q8_0 table tiny-b measured
 * 87.5% (tiny-a 94.4%), and a study of the variants (docs/converting.md) showed the loss
 * comes from the 8-bit embedding rows entering the residual stream more than from the output
 * product. Q4_0 is reported and must agree above chance. Also the Q8_0 KV cache, which needs
 * a head size divisible by 32: the fixtures' is 16, so it must be refused clearly.
 */
import test from 'ava';
import { loadModel, type EngineContext } from '../src/engine.js';
import { XglmError } from '../src/errors.js';
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
      else t.true(pct > 0, 'q4_0 agrees somewhere (a broken kernel agrees at chance, ~0%)');
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


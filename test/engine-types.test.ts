/**
 * Every weight type the converter writes (docs/converting.md: f32 f16 bf16 q8_0 q6_k q5_k_m q5_0
 * q4_k_m q4_0) loads and runs: a random-weight checkpoint whose dims are multiples of 256
 * (k-quants need them) is converted to each type and its logits compared with the f32
 * file's. The bounds are loose on purpose — quantization error on random weights is large —
 * but a wrong kernel, layout or repacking gives errors of the order of the logits themselves
 * (relative maxdiff ≈ 1) and fails.
 */
import test from 'ava';
import type { OutputTypeName } from '../src/convert/index.js';
import { openEngineModel } from '../src/engine/model.js';
import { argmax, maxDiff, randomGguf } from './helpers/fixtures.js';

const SHAPE = { dModel: 256, nLayers: 2, nHeads: 4, ffnDim: 1024, vocabSize: 2008, maxPositions: 256 };
// about twice the measured error (f16 8e-4, bf16 5e-3, q8_0 2e-2, q6_k 5e-2, q5 5–6e-2, q4 0.10–0.13)
const BOUNDS: Record<string, number> = { f16: 0.005, bf16: 0.02, q8_0: 0.05, q6_k: 0.12, q5_k_m: 0.12, q5_0: 0.15, q4_k_m: 0.25, q4_0: 0.25 };

async function logitsOf(file: string, tokens: number[]): Promise<{ rows: Float32Array[]; types: Set<string> }> {
  const model = await openEngineModel(file);
  const types = new Set(model.tensors().filter((t) => t.shape.length === 2).map((t) => `${t.type}/${t.buffer}`));
  const ctx = await model.createContext({ kvType: 'f32', threads: 1 });
  await ctx.evaluate({ tokens, positions: tokens.map((_, i) => i), logits: 'all' });
  const rows: Float32Array[] = [];
  for (let i = 0; i < tokens.length; i++) rows.push(await ctx.getLogits(i));
  await ctx.dispose();
  model.dispose();
  return { rows, types };
}

test('every converter output type loads and stays close to the f32 file', async (t) => {
  const checkpoint = { ...SHAPE, seed: 5, std: 0.08 };
  const tokens = Array.from({ length: 48 }, (_, i) => 4 + ((i * 131) % 2000));
  const ref = await logitsOf(await randomGguf(checkpoint, 'f32'), tokens);
  for (const [type, bound] of Object.entries(BOUNDS)) {
    const got = await logitsOf(await randomGguf(checkpoint, type as OutputTypeName), tokens);
    let worst = 0;
    let same = 0;
    got.rows.forEach((row, i) => {
      const { diff, scale } = maxDiff(row, ref.rows[i]!);
      worst = Math.max(worst, diff / scale);
      if (argmax(row) === argmax(ref.rows[i]!)) same++;
    });
    t.log(`${type} [${[...got.types].join(' ')}]: relative maxdiff ${worst.toExponential(2)}, top-1 equal ${same}/${tokens.length}`);
    t.true(worst <= bound, `${type}: ${worst} > ${bound}`);
    t.true(same >= 0.8 * tokens.length, `${type}: top-1 equal at ${same}/${tokens.length}`);
  }
});

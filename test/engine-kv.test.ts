/**
 * Sequences and the KV cache: several sequences in one batch, prefix sharing (kvCopy),
 * removal and re-evaluation, left padding, log-probabilities against PyTorch's top-5.
 * F32 files and an F32 cache, compared at 1e-4 of the largest |logit| of the row.
 */
import test from 'ava';
import { SAMPLER_OFF } from '../src/sampler.js';
import type { EngineContext } from '../src/engine/context.js';
import { openEngineModel } from '../src/engine/model.js';
import { XglmError } from '../src/errors.js';
import { FIXTURE_NAMES, fixtureGguf, golden, maxDiff, type FixtureName } from './helpers/fixtures.js';

const TOL = 1e-4;
const range = (n: number, start = 0) => Array.from({ length: n }, (_, i) => start + i);

async function withContext(name: FixtureName, fn: (ctx: EngineContext) => Promise<void>, contextSize?: number): Promise<void> {
  const model = await openEngineModel(await fixtureGguf(name, 'f32'));
  const ctx = await model.createContext({ kvType: 'f32', threads: 1, ...(contextSize ? { contextSize } : {}) });
  try {
    await fn(ctx);
  } finally {
    await ctx.dispose();
    model.dispose();
  }
}

/** Logits of every token of `ids` evaluated alone in a cleared cache. */
async function alone(ctx: EngineContext, ids: number[]): Promise<Float32Array[]> {
  await ctx.kvClear();
  await ctx.evaluate({ tokens: ids, positions: range(ids.length), logits: 'all' });
  const out: Float32Array[] = [];
  for (let i = 0; i < ids.length; i++) out.push(await ctx.getLogits(i));
  return out;
}

function relDiff(a: Float32Array, b: Float32Array): number {
  const { diff, scale } = maxDiff(a, b);
  return diff / scale;
}

for (const name of FIXTURE_NAMES) {
  const g = golden(name);
  const [p0, p1, , , , , p6] = g.prompts as [(typeof g.prompts)[0], (typeof g.prompts)[0], unknown, unknown, unknown, unknown, (typeof g.prompts)[0]];

  test(`${name}: two sequences interleaved in one batch give the logits of each alone`, async (t) => {
    await withContext(name, async (ctx) => {
      const a = await alone(ctx, p0.ids);
      const b = await alone(ctx, p1.ids);
      await ctx.kvClear();
      // interleave: a0 b0 a1 b1 ... then the rest of the longer one
      const order: Array<[number, number]> = [];
      for (let i = 0; i < Math.max(p0.ids.length, p1.ids.length); i++) {
        if (i < p0.ids.length) order.push([0, i]);
        if (i < p1.ids.length) order.push([1, i]);
      }
      const ids = [p0.ids, p1.ids];
      await ctx.evaluate({
        tokens: order.map(([s, i]) => ids[s]![i]!),
        positions: order.map(([, i]) => i),
        seqIds: order.map(([s]) => s),
        logits: 'all',
      });
      let worst = 0;
      for (let k = 0; k < order.length; k++) {
        const [s, i] = order[k]!;
        worst = Math.max(worst, relDiff(await ctx.getLogits(k), (s === 0 ? a : b)[i]!));
      }
      t.log(`${order.length} tokens of 2 sequences: worst relative maxdiff ${worst.toExponential(2)}`);
      t.true(worst <= TOL);
      t.is(await ctx.kvSeqPosMax(0), p0.ids.length - 1);
      t.is(await ctx.kvSeqPosMax(1), p1.ids.length - 1);
    });
  });

  test(`${name}: a shared prefix (kvCopy) and a removed tail (kvRemove) re-evaluate like a fresh cache`, async (t) => {
    await withContext(name, async (ctx) => {
      const prefix = p6.ids.slice(0, 20);
      const tailA = p6.ids.slice(20, 30);
      const tailB = p0.ids.slice(1, 9); // another continuation of the same prefix
      const freshA = await alone(ctx, [...prefix, ...tailA]);
      const freshB = await alone(ctx, [...prefix, ...tailB]);

      await ctx.kvClear();
      await ctx.evaluate({ tokens: [...prefix, ...tailA], positions: range(30), logits: 'all' });
      await ctx.kvCopy(0, 1, 0, 20);
      await ctx.evaluate({ tokens: tailB, positions: range(tailB.length, 20), seqIds: tailB.map(() => 1), logits: 'all' });
      let worst = 0;
      for (let i = 0; i < tailB.length; i++) worst = Math.max(worst, relDiff(await ctx.getLogits(i), freshB[20 + i]!));
      t.log(`continuation in a copied sequence: worst relative maxdiff ${worst.toExponential(2)}`);
      t.true(worst <= TOL);

      // drop seq 0's tail and evaluate it again: the cache must hold exactly the prefix
      await ctx.kvRemove(0, 20, -1);
      t.is(await ctx.kvSeqPosMax(0), 19);
      await ctx.evaluate({ tokens: tailA, positions: range(10, 20), logits: 'all' });
      worst = 0;
      for (let i = 0; i < 10; i++) worst = Math.max(worst, relDiff(await ctx.getLogits(i), freshA[20 + i]!));
      t.log(`re-evaluated tail after kvRemove: worst relative maxdiff ${worst.toExponential(2)}`);
      t.true(worst <= TOL);

      // copying over a sequence replaces its cells in the range: seq 1 becomes seq 0's 30 tokens
      const next = p0.ids[9]!;
      await ctx.kvCopy(0, 1);
      t.is(await ctx.kvSeqPosMax(1), 29);
      await ctx.evaluate({ tokens: [next], positions: [30], seqIds: [1] });
      const viaCopy = await ctx.getLogits(0);

      // removing everything from seq 0 keeps the shared cells for seq 1
      await ctx.kvRemove(0);
      t.is(await ctx.kvSeqPosMax(0), -1);
      t.is(await ctx.kvSeqPosMax(1), 30);

      await ctx.kvClear();
      await ctx.evaluate({ tokens: [...prefix, ...tailA, next], positions: range(31) });
      worst = relDiff(viaCopy, await ctx.getLogits(30));
      t.log(`token after copying over a sequence: relative maxdiff ${worst.toExponential(2)}`);
      t.true(worst <= TOL);
    });
  });

  test(`${name}: left-padded batch (fixture left_padding) — padding-free sequences give PyTorch's last top-5`, async (t) => {
    const lp = g.left_padding;
    await withContext(name, async (ctx) => {
      const rows = lp.input_ids.map((ids, r) => ids.filter((_, i) => lp.attention_mask[r]![i] === 1));
      const tokens = rows.flat();
      const seqIds = rows.flatMap((ids, r) => ids.map(() => r));
      const positions = rows.flatMap((ids) => range(ids.length));
      const last = rows.map((_, r) => rows.slice(0, r + 1).reduce((n, x) => n + x.length, 0) - 1);
      await ctx.evaluate({ tokens, positions, seqIds, logits: tokens.map((_, i) => last.includes(i)) });
      const res = await ctx.logprobs(last, last.map(() => -1), 5);
      for (let r = 0; r < rows.length; r++) {
        const ids = Array.from(res.topIds.subarray(r * 5, r * 5 + 5));
        const lps = Array.from(res.topLogprobs.subarray(r * 5, r * 5 + 5));
        t.deepEqual(ids, lp.last_top5[r]!.ids);
        const worst = Math.max(...lps.map((x, k) => Math.abs(x - lp.last_top5[r]!.logprobs[k]!)));
        t.log(`row ${r}: top-5 ids equal, logprob maxdiff ${worst.toExponential(2)}`);
        t.true(worst <= 1e-3);
      }
    });
  });

  test(`${name}: log-probabilities and top-5 of every position match PyTorch`, async (t) => {
    await withContext(name, async (ctx) => {
      for (const p of [p0, p6]) {
        await ctx.kvClear();
        await ctx.evaluate({ tokens: p.ids, positions: range(p.ids.length), logits: 'all' });
        const rows = range(p.ids.length);
        const targets = rows.map((i) => (i + 1 < p.ids.length ? p.ids[i + 1]! : -1));
        const res = await ctx.logprobs(rows, targets, 5);
        let worst = 0;
        let idsEqual = 0;
        for (const i of rows) {
          const ref = p.top5[i]!;
          const ids = Array.from(res.topIds.subarray(i * 5, i * 5 + 5));
          if (ids.join() === ref.ids.join()) idsEqual++;
          for (let k = 0; k < 5; k++) worst = Math.max(worst, Math.abs(res.topLogprobs[i * 5 + k]! - ref.logprobs[k]!));
          // the target's log-prob equals the reference top-5 entry when the target is in it
          const k = ref.ids.indexOf(targets[i]!);
          if (k >= 0) worst = Math.max(worst, Math.abs(res.logprobs[i]! - ref.logprobs[k]!));
        }
        t.true(Number.isNaN(res.logprobs[p.ids.length - 1]!));
        t.log(`${p.id}: top-5 ids equal at ${idsEqual}/${rows.length} positions; logprob maxdiff ${worst.toExponential(2)}`);
        t.is(idsEqual, rows.length);
        t.true(worst <= 1e-3);
      }
    });
  });
}

test('errors: a cached position, a full cache, a row without logits, a position past the context', async (t) => {
  await withContext(
    'tiny-a',
    async (ctx) => {
      await ctx.evaluate({ tokens: [2, 5, 6], positions: [0, 1, 2] });
      let err = await t.throwsAsync(ctx.evaluate({ tokens: [7], positions: [1] }), { instanceOf: XglmError });
      t.is(err!.code, 'ERR_XGLM_INVALID_ARGUMENT');
      t.regex(err!.message, /already in the KV cache/);

      err = await t.throwsAsync(ctx.sample(0, { ...SAMPLER_OFF, temperature: 0 }), { instanceOf: XglmError });
      t.is(err!.code, 'ERR_XGLM_INVALID_ARGUMENT');
      t.regex(err!.message, /no logits/);

      err = await t.throwsAsync(ctx.evaluate({ tokens: range(6, 10), positions: range(6, 3) }), { instanceOf: XglmError });
      t.is(err!.code, 'ERR_XGLM_CONTEXT_OVERFLOW');
      t.regex(err!.message, /KV cache is full/);
      // the failed batch left nothing behind
      t.is(await ctx.kvSeqPosMax(0), 2);

      err = await t.throwsAsync(ctx.evaluate({ tokens: [5], positions: [128] }), { instanceOf: XglmError });
      t.is(err!.code, 'ERR_XGLM_CONTEXT_OVERFLOW');
      err = await t.throwsAsync(ctx.evaluate({ tokens: [2008], positions: [3] }), { instanceOf: XglmError });
      t.is(err!.code, 'ERR_XGLM_INVALID_ARGUMENT');
    },
    8,
  );
});

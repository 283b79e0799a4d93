/**
 * The default KV cache (F16) against the PyTorch oracle. The other oracle suites pin an F32
 * cache to test the model's arithmetic; this one checks what users get by default: F32 files
 * (so the cache's rounding is the only approximation), the default context options, and
 * generation, scoring and several sequences sharing cells through the F16 cache.
 *
 * Tolerances: the F16 tolerance of the fixtures' README (1e-2 of the row's largest |logit|), and
 * where a discrete result (a greedy token) depends on rounding, the error measured on this
 * machine against the F32 cache (which equals PyTorch within 1e-4, engine.test.ts) decides
 * which steps the rounding cannot flip: a step whose PyTorch top-1/top-2 margin exceeds twice
 * the measured error (+ the F32 tolerance) must match.
 */
import test from 'ava';
import type { EngineContext } from '../src/engine/context.js';
import { openEngineModel } from '../src/engine/model.js';
import { loadModel } from '../src/index.js';
import { F16_TOLERANCE, F32_TOLERANCE, stepErrors, teacherForced, type StepErrors } from './helpers/greedy-steps.js';
import { allLogits } from './helpers/dequantized-twin.js';
import { FIXTURE_NAMES, argmax, fixtureGguf, golden, maxDiff, readF32, type FixtureName } from './helpers/fixtures.js';

const range = (n: number, start = 0) => Array.from({ length: n }, (_, i) => start + i);

async function withEngine<T>(name: FixtureName, kvType: 'f16' | 'f32', fn: (ctx: EngineContext) => Promise<T>): Promise<T> {
  const model = await openEngineModel(await fixtureGguf(name, 'f32'));
  const ctx = await model.createContext({ kvType, threads: 1 });
  try {
    return await fn(ctx);
  } finally {
    await ctx.dispose();
    model.dispose();
  }
}

for (const name of FIXTURE_NAMES) {
  const g = golden(name);

  test(`${name}: generate() with the default (F16) cache gives PyTorch's greedy tokens wherever the margin exceeds the measured error`, async (t) => {
    // the error of the F16 cache at every greedy step, teacher-forced with PyTorch's tokens
    const errors = new Map<string, StepErrors>();
    for (const p of g.prompts) {
      const margins = p.greedy.top1_top2_logit_margins;
      const f16 = await withEngine(name, 'f16', (c) => teacherForced(c, p.ids, p.greedy.ids));
      const f32 = await withEngine(name, 'f32', (c) => teacherForced(c, p.ids, p.greedy.ids));
      const e = stepErrors(f16, f32, margins);
      e.diffs.forEach((diff, k) => t.true(diff <= F16_TOLERANCE * e.scales[k]!, `${p.id} step ${k}: ${diff} > ${F16_TOLERANCE} × ${e.scales[k]}`));
      errors.set(p.id, e);
    }
    const model = await loadModel(await fixtureGguf(name, 'f32'));
    t.teardown(() => model.dispose());
    await using ctx = await model.createContext();
    let decided = 0;
    let total = 0;
    let worstError = 0;
    for (const p of g.prompts) {
      const e = errors.get(p.id)!;
      const r = await ctx.generate(p.text, { temperature: 0, maxTokens: p.greedy.ids.length, stopAtEos: false });
      t.deepEqual(r.tokens.slice(0, e.prefix), p.greedy.ids.slice(0, e.prefix), `${p.id}: the first ${e.prefix} steps are decided`);
      decided += e.prefix;
      total += e.decided.length;
      worstError = Math.max(worstError, ...e.bounds);
    }
    t.log(`greedy steps decided (margin > 2 × measured F16-cache error): ${decided}/${total}; worst error ${worstError.toFixed(4)}`);
    // the F16 cache's error is a small fraction of the fixture margins (>= 0.05): if most steps
    // are undecided here, the cache is far less accurate than it should be
    t.true(2 * decided >= total, `only ${decided}/${total} greedy steps decided`);
  });

  test(`${name}: score() with the default (F16) cache gives PyTorch's token log-probabilities within the F16 tolerance`, async (t) => {
    const model = await loadModel(await fixtureGguf(name, 'f32'));
    t.teardown(() => model.dispose());
    await using ctx = await model.createContext();
    const items = g.copa;
    // the F32 file's rows with an F32 cache (PyTorch's within 1e-4) give each position's logit scale
    const f32Rows = await allLogits(await fixtureGguf(name, 'f32'), items.flatMap((item) => item.results));
    let worst = 0;
    let text = 0;
    for (const item of items) {
      const texts = item.results.map((r) => r.text);
      const scores = await ctx.score(texts, { tokenLogprobs: true });
      for (const [i, r] of item.results.entries()) {
        const rows = f32Rows[text++]!;
        t.is(scores[i]!.tokens, r.ids.length - 1);
        scores[i]!.tokenLogprobs!.forEach((lp, k) => {
          const scale = maxDiff(new Float32Array(rows[k]!.length), rows[k]!).scale;
          // |Δ log_softmax| <= 2 max|Δ logit|, and the logits are within F16_TOLERANCE × scale
          const bound = 2 * F16_TOLERANCE * scale;
          worst = Math.max(worst, Math.abs(lp - r.token_logprobs[k]!) / bound);
          t.true(Math.abs(lp - r.token_logprobs[k]!) <= bound, `text ${i} token ${k}: ${lp} vs ${r.token_logprobs[k]}`);
        });
      }
    }
    t.log(`worst |Δ logprob| as a fraction of its bound: ${worst.toExponential(2)}`);
  });

  test(`${name}: sequences sharing cells in an F16 cache, in one batch, each match PyTorch`, async (t) => {
    const [p0, p1] = g.prompts as [(typeof g.prompts)[0], (typeof g.prompts)[0]];
    const all0 = readF32(name, p0.all_logits!.file);
    const V = g.model.config.vocab_size;
    const k = Math.floor(p0.ids.length / 2);
    await withEngine(name, 'f16', async (ctx) => {
      // seq 0 holds p0's first half; seqs 1 and 2 share those cells (kvCopy)
      await ctx.evaluate({ tokens: p0.ids.slice(0, k), positions: range(k) });
      await ctx.kvCopy(0, 1);
      await ctx.kvCopy(0, 2);
      // one batch: seqs 0 and 1 continue p0 (same tokens over the shared cells), seq 3 is p1
      // alone (its own cells; the mask must hide the others), interleaved
      const items: Array<{ seq: number; pos: number; id: number }> = [];
      for (let i = 0; i < Math.max(p0.ids.length - k, p1.ids.length); i++) {
        if (k + i < p0.ids.length) items.push({ seq: 0, pos: k + i, id: p0.ids[k + i]! }, { seq: 1, pos: k + i, id: p0.ids[k + i]! });
        if (i < p1.ids.length) items.push({ seq: 3, pos: i, id: p1.ids[i]! });
      }
      await ctx.evaluate({ tokens: items.map((x) => x.id), positions: items.map((x) => x.pos), seqIds: items.map((x) => x.seq), logits: 'all' });
      let worst = 0;
      for (const [row, x] of items.entries()) {
        const ref = x.seq === 3 ? (x.pos === p1.ids.length - 1 ? readF32(name, p1.last_logits.file) : undefined) : all0.subarray(x.pos * V, (x.pos + 1) * V);
        if (!ref) continue;
        const got = await ctx.getLogits(row);
        const { diff, scale } = maxDiff(got, ref);
        worst = Math.max(worst, diff / scale);
        t.true(diff <= F16_TOLERANCE * scale, `seq ${x.seq} position ${x.pos}: ${diff} > ${F16_TOLERANCE} × ${scale}`);
        if (x.seq === 3) t.is(argmax(got), p1.last_logits.argmax, 'p1 among the others');
      }
      // seq 2 still holds only the shared half: its next token sees exactly p0's first k + 1
      await ctx.evaluate({ tokens: [p0.ids[k]!], positions: [k], seqIds: [2] });
      const { diff, scale } = maxDiff(await ctx.getLogits(0), all0.subarray(k * V, (k + 1) * V));
      worst = Math.max(worst, diff / scale);
      t.true(diff <= F16_TOLERANCE * scale, `seq 2 after the batch: ${diff}`);
      t.log(`worst max|diff| / max|logit| over the shared-cell batch: ${worst.toExponential(2)}`);
    });
  });

  test(`${name}: a left-padded batch over an F16 cache gives PyTorch's last top-5 where the measured error cannot reorder it`, async (t) => {
    const lp = g.left_padding;
    // each row a sequence of its own, without its padding, both in one batch
    const rows = lp.input_ids.map((ids, r) => ids.filter((_, i) => lp.attention_mask[r]![i] === 1));
    const items = rows.flatMap((ids, s) => ids.map((id, pos) => ({ id, pos, s })));
    const lastRows = (kvType: 'f16' | 'f32') =>
      withEngine(name, kvType, async (ctx) => {
        await ctx.evaluate({ tokens: items.map((x) => x.id), positions: items.map((x) => x.pos), seqIds: items.map((x) => x.s), logits: 'all' });
        return Promise.all(rows.map((ids, s) => ctx.getLogits(items.findIndex((x) => x.s === s && x.pos === ids.length - 1))));
      });
    const [f16, f32] = [await lastRows('f16'), await lastRows('f32')];
    let compared = 0;
    for (const [s, want] of lp.last_top5.entries()) {
      const { diff, scale } = maxDiff(f16[s]!, f32[s]!);
      t.true(diff <= F16_TOLERANCE * scale, `row ${s}: ${diff} > ${F16_TOLERANCE} × ${scale}`);
      const err = diff + F32_TOLERANCE * scale;
      const order = Array.from(f16[s]!.keys()).sort((a, b) => f16[s]![b]! - f16[s]![a]!);
      // PyTorch's ranks are ours up to the first pair of neighbours closer than twice the error
      let n = 1;
      while (n < 5 && want.logprobs[n - 1]! - want.logprobs[n]! > 2 * err) n++;
      if (want.logprobs[0]! - want.logprobs[1]! > 2 * err) {
        t.deepEqual(order.slice(0, n - 1), want.ids.slice(0, n - 1), `row ${s}: the first ${n - 1} ranks are decided`);
        compared += n - 1;
      }
      t.true(want.ids.every((id) => order.slice(0, 12).includes(id)), `row ${s}: PyTorch's top-5 are among our best 12`);
    }
    t.log(`decided top-5 ranks compared: ${compared}`);
    t.true(compared >= 1, 'at least one rank is decided');
  });
}

/**
 * Native sampling over real logits rows (tiny-b f32, prompt p0), checked against the same
 * rule computed here in JS from getLogits(): greedy, filters, penalties, bias, seeds, and the
 * distribution of temperature sampling. The fixture's logits are sharp (gaps of ~8 between
 * the top tokens), so distribution tests use high temperatures or a flattening logit bias.
 */
import test from 'ava';
import { SAMPLER_OFF } from '../src/sampler.js';
import type { EngineContext } from '../src/engine/context.js';
import { openEngineModel } from '../src/engine/model.js';
import { XglmError } from '../src/errors.js';
import { argmax, fixtureGguf, golden } from './helpers/fixtures.js';

const g = golden('tiny-b');
const p = g.prompts[0]!;
const last = p.ids.length - 1;

/** Runs fn on the last row of p0. */
async function withRow(fn: (ctx: EngineContext, logits: Float32Array) => Promise<void>): Promise<void> {
  const model = await openEngineModel(await fixtureGguf('tiny-b', 'f32'));
  const ctx = await model.createContext({ kvType: 'f32', threads: 1 });
  await ctx.evaluate({ tokens: p.ids, positions: p.ids.map((_, i) => i), logits: 'all' });
  try {
    await fn(ctx, await ctx.getLogits(last));
  } finally {
    await ctx.dispose();
    model.dispose();
  }
}

/** Ids sorted by logit, most likely first. */
const ranked = (l: Float32Array) => Array.from(l.keys()).sort((a, b) => l[b]! - l[a]! || a - b);

function softmax(xs: number[]): number[] {
  const m = Math.max(...xs);
  const e = xs.map((x) => Math.exp(x - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}

test('greedy is the argmax (PyTorch golden) and filters that keep one token agree', async (t) => {
  await withRow(async (ctx, logits) => {
    t.is(argmax(logits), p.last_logits.argmax);
    t.is(await ctx.sample(last, { ...SAMPLER_OFF, temperature: 0 }), p.last_logits.argmax);
    t.is(await ctx.sample(last, { ...SAMPLER_OFF, temperature: 1, topK: 1, seed: 1 }), p.last_logits.argmax);
    t.is(await ctx.sample(last, { ...SAMPLER_OFF, temperature: 1, minP: 1, seed: 1 }), p.last_logits.argmax);
    t.is(await ctx.sample(last, { ...SAMPLER_OFF, temperature: 1, topP: 1e-6, seed: 1 }), p.last_logits.argmax);
  });
});

test('logit bias and penalties change the greedy choice exactly as their formulas say', async (t) => {
  await withRow(async (ctx, logits) => {
    const [first, second] = ranked(logits) as [number, number];
    t.is(await ctx.sample(last, { ...SAMPLER_OFF, temperature: 0, logitBias: { [first]: -Infinity } }), second);
    t.is(await ctx.sample(last, { ...SAMPLER_OFF, temperature: 0, logitBias: new Map([[second, logits[first]! - logits[second]! + 1]]) }), second);

    // repetition penalty on the top token: l > 0 ? l / r : l * r, then the argmax in JS
    for (const r of [1.05, 1.5, 4]) {
      const work = Float32Array.from(logits);
      work[first] = work[first]! > 0 ? work[first]! / r : work[first]! * r;
      t.is(await ctx.sample(last, { ...SAMPLER_OFF, temperature: 0, repeatPenalty: r, penaltyTokens: [first] }), argmax(work), `repeat ${r}`);
    }
    // frequency × count + presence
    const gap = logits[first]! - logits[second]!;
    const counts = [first, first, first];
    t.is(await ctx.sample(last, { ...SAMPLER_OFF, temperature: 0, frequencyPenalty: gap / 3 + 0.01, penaltyTokens: counts }), second);
    t.is(await ctx.sample(last, { ...SAMPLER_OFF, temperature: 0, frequencyPenalty: gap / 3 - 0.01, penaltyTokens: counts }), first);
    t.is(await ctx.sample(last, { ...SAMPLER_OFF, temperature: 0, presencePenalty: gap + 0.01, penaltyTokens: counts }), second);
    // every token banned
    const all = new Map(Array.from(logits.keys(), (id) => [id, -Infinity] as [number, number]));
    t.is(await ctx.sample(last, { ...SAMPLER_OFF, temperature: 1, logitBias: all }), -1);
  });
});

test('a seed makes draws reproducible across contexts; draws follow softmax(top-k / temperature)', async (t) => {
  await withRow(async (ctx, logits) => {
    const draws = async (c: EngineContext, seed: number, n: number, opts = {}) => {
      const out = [await c.sample(last, { ...SAMPLER_OFF, temperature: 8, topK: 50, seed, ...opts })];
      for (let i = 1; i < n; i++) out.push(await c.sample(last, { ...SAMPLER_OFF, temperature: 8, topK: 50, ...opts }));
      return out;
    };
    const a = await draws(ctx, 42, 50);
    const model2 = await openEngineModel(await fixtureGguf('tiny-b', 'f32'));
    const ctx2 = await model2.createContext({ kvType: 'f32', threads: 1 });
    await ctx2.evaluate({ tokens: p.ids, positions: p.ids.map((_, i) => i), logits: 'all' });
    t.deepEqual(await draws(ctx2, 42, 50), a);
    t.notDeepEqual(await draws(ctx2, 43, 50), a);
    await ctx2.dispose();
    model2.dispose();

    // distribution: top-3 at temperature 8 (flat enough to see all three)
    const top = ranked(logits).slice(0, 3);
    const expected = softmax(top.map((id) => logits[id]! / 8));
    const n = 3000;
    const seen = new Map<number, number>();
    let id = await ctx.sample(last, { ...SAMPLER_OFF, temperature: 8, topK: 3, seed: 7 });
    for (let i = 0; i < n; i++) {
      seen.set(id, (seen.get(id) ?? 0) + 1);
      id = await ctx.sample(last, { ...SAMPLER_OFF, temperature: 8, topK: 3 });
    }
    t.true([...seen.keys()].every((k) => top.includes(k)));
    for (let k = 0; k < 3; k++) {
      const freq = (seen.get(top[k]!) ?? 0) / n;
      const sd = Math.sqrt((expected[k]! * (1 - expected[k]!)) / n);
      t.log(`token ${top[k]}: expected p ${expected[k]!.toFixed(4)}, observed ${freq.toFixed(4)}`);
      t.true(Math.abs(freq - expected[k]!) <= 5 * sd + 1e-3);
    }
  });
});

test('top-p and typical-p keep the sets their definitions give', async (t) => {
  await withRow(async (ctx, sharp) => {
    // flatten the row with a logit bias (bias = l/8 - l), as filters run before temperature
    const logits = Float32Array.from(sharp, (x) => x / 8);
    const logitBias = new Map(Array.from(sharp.keys(), (id) => [id, logits[id]! - sharp[id]!] as [number, number]));
    const order = ranked(logits);
    const probs = softmax(Array.from(logits));
    // top-p: the smallest most-likely prefix reaching p
    const topP = 0.9;
    const nucleus = new Set<number>();
    let cum = 0;
    for (const id of order) {
      nucleus.add(id);
      cum += probs[id]!;
      if (cum >= topP) break;
    }
    // typical: closest surprisal to the entropy first, until typical_p is reached
    const typP = 0.5;
    const h = -probs.reduce((s, q) => s + (q > 0 ? q * Math.log(q) : 0), 0);
    const byTypical = Array.from(logits.keys()).sort((a, b) => Math.abs(-Math.log(probs[a]!) - h) - Math.abs(-Math.log(probs[b]!) - h) || a - b);
    const typical = new Set<number>();
    cum = 0;
    for (const id of byTypical) {
      typical.add(id);
      cum += probs[id]!;
      if (cum >= typP) break;
    }
    t.log(`top-p ${topP} keeps ${nucleus.size} tokens; typical-p ${typP} keeps ${typical.size}`);
    t.true(nucleus.size > 1 && typical.size > 1, 'the sets are not trivial');
    const seenTop = new Set<number>();
    let id = await ctx.sample(last, { ...SAMPLER_OFF, temperature: 1, topP, logitBias, seed: 3 });
    for (let i = 0; i < 300; i++) {
      t.true(nucleus.has(id), `top-p drew ${id}`);
      seenTop.add(id);
      id = await ctx.sample(last, { ...SAMPLER_OFF, temperature: 1, topP, logitBias });
    }
    id = await ctx.sample(last, { ...SAMPLER_OFF, temperature: 1, typicalP: typP, logitBias, seed: 3 });
    for (let i = 0; i < 300; i++) {
      t.true(typical.has(id), `typical drew ${id}`);
      id = await ctx.sample(last, { ...SAMPLER_OFF, temperature: 1, typicalP: typP, logitBias });
    }
    t.true(seenTop.size > 1);
  });
});

test('sampler arguments are validated before they cross', async (t) => {
  await withRow(async (ctx) => {
    for (const bad of [{ temperature: -1 }, { topK: 1.5 }, { topP: 0 }, { minP: 2 }, { seed: -1 }, { penaltyTokens: [99999] }, { logitBias: { 1: NaN } }]) {
      const err = t.throws(() => ctx.sample(last, { ...SAMPLER_OFF, ...bad }), { instanceOf: XglmError });
      t.is(err!.code, 'ERR_XGLM_INVALID_ARGUMENT', JSON.stringify(bad));
    }
    t.throws(() => ctx.sample(p.ids.length, { ...SAMPLER_OFF }), { instanceOf: XglmError });
  });
});

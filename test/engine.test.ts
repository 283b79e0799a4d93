/**
 * The engine against the PyTorch oracle (test/fixtures/<model>/golden.json and logits/*.f32):
 * F32 and F16 GGUF files made from the fixture checkpoints, every prompt of both models.
 * Tolerances are relative to the largest |value| of the reference row (fixtures/README.md).
 */
import test from 'ava';
import { loadModel, type EngineContext, type EngineModel } from '../src/engine.js';
import { FIXTURE_NAMES, argmax, fixtureGguf, golden, maxDiff, minimalFixtureGguf, readF32, type FixtureName } from './helpers/fixture-gguf.js';

const F32_TOLERANCE = 1e-4;
const F16_TOLERANCE = 1e-2;

const positions = (n: number, start = 0) => Array.from({ length: n }, (_, i) => start + i);

async function withContext<T>(name: FixtureName, type: 'f32' | 'f16', fn: (ctx: EngineContext, model: EngineModel) => Promise<T>, keep = false): Promise<T> {
  const model = await loadModel(await fixtureGguf(name, type));
  // one thread: the tiny models gain nothing from more, and a shared CI box loses a lot
  const ctx = await model.createContext({ kvType: type === 'f32' ? 'f32' : 'f16', keepActivations: keep, threads: 1 });
  try {
    return await fn(ctx, model);
  } finally {
    await ctx.dispose();
    model.dispose();
  }
}

/** Greedy continuation through the KV cache, as golden.greedy was made. */
async function greedy(ctx: EngineContext, prompt: number[], nNew: number): Promise<number[]> {
  await ctx.evaluate({ tokens: prompt, positions: positions(prompt.length) });
  const out: number[] = [];
  for (let k = 0; k < nNew; k++) {
    const id = await ctx.sample(k === 0 ? prompt.length - 1 : 0, { temperature: 0 });
    out.push(id);
    if (k + 1 < nNew) await ctx.evaluate({ tokens: [id], positions: [prompt.length + k] });
  }
  return out;
}

for (const name of FIXTURE_NAMES) {
  const g = golden(name);

  test(`${name} f32: last-position logits of every prompt match PyTorch`, async (t) => {
    await withContext(name, 'f32', async (ctx) => {
      for (const p of g.prompts) {
        await ctx.kvClear();
        await ctx.evaluate({ tokens: p.ids, positions: positions(p.ids.length) });
        const ours = await ctx.getLogits(p.ids.length - 1);
        const ref = readF32(name, p.last_logits.file);
        const { diff, scale } = maxDiff(ours, ref);
        t.log(`${p.id} (${p.ids.length} tokens): maxdiff ${diff.toExponential(3)} of max|logit| ${scale.toFixed(2)} (rel ${(diff / scale).toExponential(2)})`);
        t.true(diff <= F32_TOLERANCE * scale, `${p.id}: maxdiff ${diff} > ${F32_TOLERANCE} × ${scale}`);
        t.is(argmax(ours), p.last_logits.argmax);
      }
    });
  });

  test(`${name} f32: logits at every position and the hidden state of every layer match PyTorch`, async (t) => {
    const p = g.prompts[0]!;
    const n = p.ids.length;
    const { d_model: d, num_layers: L, vocab_size: V } = g.model.config;
    await withContext(
      name,
      'f32',
      async (ctx) => {
        await ctx.evaluate({ tokens: p.ids, positions: positions(n), logits: 'all' });
        const all = readF32(name, p.all_logits!.file);
        let worst = 0;
        for (let i = 0; i < n; i++) {
          const ref = all.subarray(i * V, (i + 1) * V);
          const { diff, scale } = maxDiff(await ctx.getLogits(i), ref);
          worst = Math.max(worst, diff / scale);
        }
        t.log(`all ${n} positions: worst relative maxdiff ${worst.toExponential(2)}`);
        t.true(worst <= F32_TOLERANCE);

        const hidden = readF32(name, p.hidden_states!.file);
        const names = ['inp_embd', ...Array.from({ length: L }, (_, il) => `l_out-${il}`), 'result_norm'];
        for (let k = 0; k < names.length; k++) {
          const ours = await ctx.getActivation(names[k]!);
          t.truthy(ours, `activation ${names[k]} kept`);
          const ref = hidden.subarray(k * n * d, (k + 1) * n * d);
          const { diff, scale } = maxDiff(ours!, ref);
          t.log(`hidden[${k}] ${names[k]}: maxdiff ${diff.toExponential(3)} of max ${scale.toFixed(2)}`);
          t.true(diff <= F32_TOLERANCE * scale, `${names[k]}: ${diff} > ${F32_TOLERANCE} × ${scale}`);
        }
      },
      true,
    );
  });

  test(`${name} f32: greedy continuation through the KV cache equals PyTorch's`, async (t) => {
    await withContext(name, 'f32', async (ctx) => {
      for (const p of g.prompts) {
        await ctx.kvClear();
        t.deepEqual(await greedy(ctx, p.ids, p.greedy.n_new), p.greedy.ids, p.id);
      }
    });
  });

  // tiny-b's weights are float16 in the checkpoint, so an F16 file holds them exactly and the
  // greedy margins (>= 0.1) exceed our float16 arithmetic error: the whole continuation must
  // match. tiny-a's are float32: rounding them to F16 moves logits by up to ~0.2, more than
  // some of its margins (0.11), so there the steps must match while the margin is larger
  // than twice the F16 error measured on the prompt.
  test(`${name} f16: logits within 1e-2 of PyTorch and the same greedy continuation`, async (t) => {
    await withContext(name, 'f16', async (ctx) => {
      for (const p of g.prompts) {
        await ctx.kvClear();
        await ctx.evaluate({ tokens: p.ids, positions: positions(p.ids.length) });
        const { diff, scale } = maxDiff(await ctx.getLogits(p.ids.length - 1), readF32(name, p.last_logits.file));
        t.true(diff <= F16_TOLERANCE * scale, `${p.id}: ${diff} > ${F16_TOLERANCE} × ${scale}`);
        await ctx.kvClear();
        const ours = await greedy(ctx, p.ids, p.greedy.n_new);
        const margins = p.greedy.top1_top2_logit_margins;
        let decided = margins.length;
        if (name === 'tiny-a') decided = margins.findIndex((m) => m < 2 * diff) === -1 ? margins.length : margins.findIndex((m) => m < 2 * diff);
        t.log(`${p.id}: maxdiff ${diff.toExponential(3)} (rel ${(diff / scale).toExponential(2)}); greedy steps checked ${decided}/${margins.length}, equal in all: ${ours.every((id, i) => id === p.greedy.ids[i])}`);
        t.deepEqual(ours.slice(0, decided), p.greedy.ids.slice(0, decided), p.id);
      }
    });
  });

  test(`${name} f32: one token at a time and random chunkings equal one-shot evaluation`, async (t) => {
    const p = g.prompts.reduce((a, b) => (b.ids.length > a.ids.length ? b : a));
    const n = p.ids.length;
    await withContext(name, 'f32', async (ctx) => {
      await ctx.evaluate({ tokens: p.ids, positions: positions(n), logits: 'all' });
      const oneShot: Float32Array[] = [];
      for (let i = 0; i < n; i++) oneShot.push(await ctx.getLogits(i));

      // seeded, so a failure can be replayed; logged
      let state = 12345;
      const rand = () => ((state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32);
      const chunkings: Array<{ label: string; sizes: number[] }> = [{ label: 'one at a time', sizes: Array(n).fill(1) }];
      for (let r = 0; r < 3; r++) {
        const sizes: number[] = [];
        for (let left = n; left > 0; ) {
          const s = Math.min(left, 1 + Math.floor(rand() * 9));
          sizes.push(s);
          left -= s;
        }
        chunkings.push({ label: `random ${sizes.join('+')}`, sizes });
      }
      for (const { label, sizes } of chunkings) {
        await ctx.kvClear();
        let worst = 0;
        let at = 0;
        for (const s of sizes) {
          await ctx.evaluate({ tokens: p.ids.slice(at, at + s), positions: positions(s, at), logits: 'all' });
          for (let i = 0; i < s; i++) {
            const { diff, scale } = maxDiff(await ctx.getLogits(i), oneShot[at + i]!);
            worst = Math.max(worst, diff / scale);
          }
          at += s;
        }
        t.log(`${p.id} ${label}: worst relative maxdiff ${worst.toExponential(2)}`);
        t.true(worst <= F32_TOLERANCE, label);
      }
    });
  });
}

test('a file without position_embd.weight: the engine computes the sinusoid table and matches PyTorch', async (t) => {
  const name = 'tiny-b';
  const g = golden(name);
  const model = await loadModel(await minimalFixtureGguf(name, 'f32'));
  t.is(model.tensors().find((x) => x.name === 'position_embd.weight')?.buffer, 'computed');
  const ctx = await model.createContext({ kvType: 'f32', threads: 1 });
  for (const p of g.prompts) {
    await ctx.kvClear();
    await ctx.evaluate({ tokens: p.ids, positions: positions(p.ids.length) });
    const { diff, scale } = maxDiff(await ctx.getLogits(p.ids.length - 1), readF32(name, p.last_logits.file));
    t.true(diff <= F32_TOLERANCE * scale, `${p.id}: ${diff}`);
  }
  await ctx.dispose();
  model.dispose();
});

import test from 'ava';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { measureTimerLag } from '../bench/timer-lag.js';
import type { OutputTypeName } from '../src/convert/index.js';
import { coreOf } from '../src/runtime/core.js';
import { loadModel, type XglmModel } from '../src/index.js';
import { FIXTURE_NAMES, fixtureGguf, golden, relDiff, type FixtureName } from './helpers/fixtures.js';

const models = new Map<string, Promise<XglmModel>>();
function model(name: FixtureName, type: OutputTypeName = 'f32'): Promise<XglmModel> {
  const key = `${name}-${type}`;
  if (!models.has(key)) models.set(key, fixtureGguf(name, type).then((f) => loadModel(f)));
  return models.get(key)!;
}
test.after.always(async () => {
  for (const m of models.values()) await (await m).dispose();
});

for (const name of FIXTURE_NAMES) {
  test(`${name}: greedy generation equals PyTorch's greedy continuation for every prompt`, async (t) => {
    const g = golden(name);
    const m = await model(name);
    await using ctx = await m.createContext({ kvType: 'f32' });
    for (const p of g.prompts) {
      t.deepEqual(m.tokenize(p.text), p.ids, `${p.id} ids`);
      const r = await ctx.generate(p.text, { temperature: 0, maxTokens: p.greedy.ids.length, stopAtEos: false });
      t.deepEqual(r.tokens, p.greedy.ids, `${p.id} greedy`);
      t.is(r.finishReason, 'length');
      t.is(r.text, m.detokenize(p.greedy.ids).trimEnd().replace(/^ +/, ''), `${p.id} text`);
    }
  });

  test(`${name}: generate() stops at </s> where PyTorch's generate() would`, async (t) => {
    const g = golden(name);
    const m = await model(name);
    await using ctx = await m.createContext({ kvType: 'f32' });
    let checked = 0;
    for (const p of g.prompts) {
      const r = await ctx.generate(p.text, { temperature: 0, maxTokens: p.greedy.ids.length });
      const eos = p.greedy.eos_index;
      if (eos === null || eos === undefined) t.is(r.finishReason, 'length');
      else {
        t.is(r.finishReason, 'eos');
        t.deepEqual(r.tokens, p.greedy.ids.slice(0, eos));
        checked++;
      }
    }
    t.log(`${checked} prompts end at </s>`);
  });

  test(`${name}: score() and logprobs() equal the fixture (F32, 1e-4 of the largest |logprob|)`, async (t) => {
    const g = golden(name);
    const m = await model(name);
    await using ctx = await m.createContext({ kvType: 'f32' });
    for (const item of g.copa) {
      const texts = item.results.map((r) => r.text);
      const scores = await ctx.score(texts, { tokenLogprobs: true });
      item.results.forEach((r, i) => {
        const s = scores[i]!;
        t.is(s.tokens, r.ids.length - 1);
        const d = relDiff(s.tokenLogprobs!, r.token_logprobs);
        t.true(d <= 1e-4, `token logprobs maxdiff ${d}`);
        t.true(Math.abs(s.logprob - r.sum_all) <= 1e-4 * Math.abs(r.sum_all), `sum ${s.logprob} vs ${r.sum_all}`);
      });
    }
    let worst = 0;
    for (const p of g.prompts) {
      const lp = await ctx.logprobs(p.text, { top: 5 });
      t.is(lp.top.length, p.ids.length);
      for (const ref of p.top5) {
        const got = lp.top[ref.pos]!;
        t.deepEqual(got.map(([id]) => id), ref.ids, `${p.id} top5 ids at ${ref.pos}`);
        worst = Math.max(worst, relDiff(got.map(([, l]) => l), ref.logprobs));
      }
      // logprobs[i] is the log-probability of the token that follows: compare with top-5 where it appears
      for (let i = 0; i + 1 < p.ids.length; i++) {
        const ref = p.top5[i];
        const k = ref.ids.indexOf(p.ids[i + 1]);
        if (k >= 0) t.true(Math.abs(lp.logprobs[i]! - ref.logprobs[k]) <= 1e-4 * Math.max(1, Math.abs(ref.logprobs[4])));
      }
    }
    t.log(`top-5 logprobs maxdiff (relative) ${worst.toExponential(2)}`);
    t.true(worst <= 1e-4);
  });

  test(`${name}: scoreContinuations equals scoring each full text, evaluating the shared prefix once`, async (t) => {
    const g = golden(name);
    const m = await model(name);
    await using ctx = await m.createContext({ kvType: 'f32' });
    for (const item of g.copa) {
      const conts = [`\n${item.choice1}`, `\n${item.choice2}`];
      const before = ctx.stats.evaluatedTokens;
      const got = await ctx.scoreContinuations(item.premise, conts);
      const evaluated = ctx.stats.evaluatedTokens - before;
      const full = await ctx.score(conts.map((c) => item.premise + c));
      got.forEach((s, i) => {
        t.true(Math.abs(s.logprob - full[i]!.logprob) <= 1e-5 * Math.abs(full[i]!.logprob), `${s.logprob} vs ${full[i]!.logprob}`);
        const ref = item.results[i];
        t.is(s.prefixTokens, ref.n_premise_tokens);
        t.true(Math.abs(s.continuationLogprob - ref.sum_continuation) <= 1e-4 * Math.abs(ref.sum_continuation));
      });
      // shared tokens once: (common - 1) + Σ (n_i - common + 1)
      const ids = item.results.map((r) => r.ids);
      let common = 0;
      while (ids.every((x: number[]) => x[common] === ids[0][common])) common++;
      const expected = common - 1 + ids.reduce((s: number, x: number[]) => s + x.length - common + 1, 0);
      t.is(evaluated, expected);
      t.true(evaluated < ids.reduce((s: number, x: number[]) => s + x.length, 0));
      const pred = got[0]!.logprob >= got[1]!.logprob ? 0 : 1;
      t.is(pred, item.prediction_model_card);

      // scorePrefix: false — the continuations' log-probs only, the prefix without logits rows
      let r0 = ctx.stats.logitsRows;
      await ctx.scoreContinuations(item.premise, conts);
      const rowsFull = ctx.stats.logitsRows - r0;
      r0 = ctx.stats.logitsRows;
      const cont = await ctx.scoreContinuations(item.premise, conts, { scorePrefix: false, tokenLogprobs: true });
      const rowsCont = ctx.stats.logitsRows - r0;
      cont.forEach((s, i) => {
        t.true(Number.isNaN(s.logprob));
        t.true(Math.abs(s.continuationLogprob - got[i]!.continuationLogprob) <= 1e-5 * Math.abs(got[i]!.continuationLogprob));
        t.true(Math.abs(s.continuationLogprob - item.results[i].sum_continuation) <= 1e-4 * Math.abs(item.results[i].sum_continuation));
        t.true(Number.isNaN(s.tokenLogprobs![0]!), 'the first prefix position is not scored');
      });
      // the model card's decision (the larger full-text total) is the larger continuation total
      t.is(cont[0]!.continuationLogprob >= cont[1]!.continuationLogprob ? 0 : 1, item.prediction_model_card);
      // rows: (common - 1) + Σ (n_i - common) with the prefix scored; without, only from the
      // prefix's last token on
      const candidateRows = ids.reduce((s: number, x: number[]) => s + x.length - common, 0);
      const minPrefix = Math.min(...item.results.map((r) => r.n_premise_tokens));
      t.is(rowsFull, common - 1 + candidateRows);
      t.is(rowsCont, Math.max(0, common - minPrefix) + candidateRows);
    }
  });
}

test('a new call reuses the cached token prefix and evaluates only the rest', async (t) => {
  const m = await model('tiny-b');
  await using ctx = await m.createContext({ kvType: 'f32' });
  const g = golden('tiny-b');
  const p = g.prompts[0];
  const first = await ctx.generate(p.text, { temperature: 0, maxTokens: 4, stopAtEos: false });
  t.is(first.usage.cachedPromptTokens, 0);
  // the prompt plus what was generated: all of it is cached but the last token
  const ids = [...p.ids, ...first.tokens];
  const before = ctx.stats.evaluatedTokens;
  const second = await ctx.generate(ids, { temperature: 0, maxTokens: p.greedy.ids.length - 4, stopAtEos: false });
  t.is(second.usage.cachedPromptTokens, ids.length - 1);
  t.deepEqual([...first.tokens, ...second.tokens], p.greedy.ids);
  t.is(ctx.stats.evaluatedTokens - before, 1 + second.tokens.length - 1);
});

test('the same seed gives the same tokens, in another process too; sampling options are honoured', async (t) => {
  const m = await model('tiny-b');
  await using ctx = await m.createContext();
  const opts = { temperature: 1.5, topK: 0, topP: 1, minP: 0, maxTokens: 24, seed: 1234, stopAtEos: false };
  const a = await ctx.generate('Hello', opts);
  const b = await ctx.generate('Hello', opts);
  t.deepEqual(a.tokens, b.tokens);
  const c = await ctx.generate('Hello', { ...opts, seed: 99 });
  t.notDeepEqual(a.tokens, c.tokens);
  const script = `
    const { loadModel } = require(${JSON.stringify(path.join(__dirname, '..', 'src', 'index.ts'))});
    loadModel(process.argv[1]).then(async (m) => {
      const ctx = await m.createContext();
      const r = await ctx.generate('Hello', ${JSON.stringify(opts)});
      process.stdout.write(JSON.stringify(r.tokens));
      await m.dispose();
    });`;
  const out = execFileSync(process.execPath, ['--import', 'tsx', '-e', script, await fixtureGguf('tiny-b')], { encoding: 'utf8' });
  t.deepEqual(JSON.parse(out), a.tokens);
  // greedy: temperature 0 ignores the seed
  const g1 = await ctx.generate('Hello', { temperature: 0, maxTokens: 8, seed: 1 });
  const g2 = await ctx.generate('Hello', { temperature: 0, maxTokens: 8, seed: 2 });
  t.deepEqual(g1.tokens, g2.tokens);
  // a banned token never appears
  const banned = a.tokens[0]!;
  const d = await ctx.generate('Hello', { ...opts, logitBias: { [banned]: -Infinity } });
  t.false(d.tokens.includes(banned));
});

test('stop strings cut the text exactly before the stop string', async (t) => {
  const m = await model('tiny-a');
  const g = golden('tiny-a');
  await using ctx = await m.createContext({ kvType: 'f32' });
  const p = g.prompts[0];
  const full = await ctx.generate(p.text, { temperature: 0, maxTokens: 20, stopAtEos: false });
  t.true(full.text.length > 6);
  const stop = full.text.slice(3, 6);
  const chunks: string[] = [];
  const gen = ctx.generate(p.text, { temperature: 0, maxTokens: 20, stop: [stop], stopAtEos: false });
  for await (const chunk of gen) chunks.push(chunk.text);
  const r = await gen;
  t.is(r.finishReason, 'stop');
  t.is(r.text, full.text.slice(0, full.text.indexOf(stop)));
  t.is(chunks.join(''), r.text);
  t.false(chunks.join('').includes(stop));
});

test('after a stop the cached tokens are what the KV cache holds: the prompt and the greedy continuation', async (t) => {
  // The native loop may evaluate a token or two past the stop before it sees it; the
  // bookkeeping must follow (a later call's prefix reuse depends on it).
  const m = await model('tiny-b');
  const p = golden('tiny-b').prompts[1];
  await using ctx = await m.createContext({ kvType: 'f32' });
  let n = 0;
  const r = await ctx.generate(p.ids, { temperature: 0, maxTokens: p.greedy.ids.length, stopAtEos: false, onToken: () => void n++, stop: [m.detokenize(p.greedy.ids.slice(2, 4)).trim()] });
  t.is(r.finishReason, 'stop');
  const cached = [...ctx.cachedTokens(0)];
  t.is(await coreOf(ctx).engine().kvSeqPosMax(0), cached.length - 1);
  t.deepEqual(cached.slice(0, p.ids.length), p.ids);
  t.deepEqual(cached.slice(p.ids.length), p.greedy.ids.slice(0, cached.length - p.ids.length));
  // and the cache is usable: continuing from it gives PyTorch's greedy continuation
  const again = await ctx.generate(p.ids, { temperature: 0, maxTokens: p.greedy.ids.length, stopAtEos: false });
  t.deepEqual(again.tokens, p.greedy.ids);
  t.true(again.usage.cachedPromptTokens === p.ids.length - 1);
  t.log(`stopped after ${n} tokens; ${cached.length - p.ids.length} generated tokens cached`);
});

test('an exception thrown by onToken rejects the generation; the context keeps working', async (t) => {
  const m = await model('tiny-a');
  const p = golden('tiny-a').prompts[0];
  await using ctx = await m.createContext({ kvType: 'f32' });
  const boom = new Error('boom');
  await t.throwsAsync(
    ctx.generate(p.ids, { temperature: 0, maxTokens: 10, stopAtEos: false, onToken: (tok) => { if (tok >= 0) throw boom; } }).result,
    { is: boom },
  );
  const r = await ctx.generate(p.ids, { temperature: 0, maxTokens: p.greedy.ids.length, stopAtEos: false });
  t.deepEqual(r.tokens, p.greedy.ids);
});

test('streamed chunks, callbacks and the result agree', async (t) => {
  const m = await model('tiny-b');
  await using ctx = await m.createContext();
  const tokens: number[] = [];
  const texts: string[] = [];
  const gen = ctx.generate('Bonjour', { temperature: 0, maxTokens: 16, stopAtEos: false, onToken: (x) => tokens.push(x), onText: (x) => texts.push(x) });
  const chunkTokens: number[] = [];
  let chunkText = '';
  for await (const c of gen) {
    chunkTokens.push(...c.tokens);
    chunkText += c.text;
  }
  const r = await gen.result;
  t.deepEqual(chunkTokens, r.tokens);
  t.deepEqual(tokens, r.tokens);
  t.is(chunkText, r.text);
  t.is(texts.join(''), r.text);
  t.is(r.text, m.detokenize(r.tokens));
  t.is(r.usage.completionTokens, 16);
});

// Serial: the abort is sent from the progress callback while the context thread goes on
// evaluating (50 ubatches of a tiny model, ~40 ms); with the file's concurrent tests keeping the
// JS thread busy it once arrived after the last ubatch (test:variants, skylakex), so this runs
// before them, and in ubatches of 2 (twice the time for the abort to land).
test.serial('abort during the prompt and during generation ends with finishReason abort', async (t) => {
  const m = await model('tiny-b');
  const g = golden('tiny-b');
  await using ctx = await m.createContext({ batchSize: 2 });
  const long = g.prompts[6].ids.concat(g.prompts[6].ids).slice(0, 200);
  const ac = new AbortController();
  const t0 = performance.now();
  const r = await ctx.generate(long, { maxTokens: 10, signal: ac.signal, onPromptProgress: (done) => done >= 8 && ac.abort() });
  t.is(r.finishReason, 'abort');
  t.is(r.tokens.length, 0);
  t.true(ctx.cachedTokens(0).length < long.length);
  t.log(`prompt abort resolved after ${(performance.now() - t0).toFixed(1)} ms`);
  const ac2 = new AbortController();
  const r2 = await ctx.generate('Hello', { maxTokens: 50, temperature: 0, stopAtEos: false, signal: ac2.signal, onToken: () => r2tokens++ >= 2 && ac2.abort() });
  t.is(r2.finishReason, 'abort');
  t.is(r2.tokens.length, 3);
  // the context keeps working afterwards
  const r3 = await ctx.generate('Hello', { maxTokens: 3, temperature: 0, stopAtEos: false });
  t.deepEqual(r3.tokens, r2.tokens);
});
let r2tokens = 0;

test('context overflow: an error by default; truncate-left keeps generating', async (t) => {
  const m = await model('tiny-a');
  const g = golden('tiny-a');
  const limit = g.model.config.max_position_embeddings;
  await using ctx = await m.createContext();
  const err = t.throws(() => ctx.generate(g.prompts[6].ids, { maxTokens: limit }));
  t.is((err as { code?: string }).code, 'ERR_XGLM_CONTEXT_OVERFLOW');
  await using ctx2 = await m.createContext({ contextOverflow: 'truncate-left' });
  const r = await ctx2.generate(g.prompts[6].ids, { maxTokens: limit, temperature: 0, stopAtEos: false });
  t.is(r.tokens.length, limit);
  t.is(r.finishReason, 'length');
  t.true(ctx2.cachedTokens(0).length <= limit);
  // without maxTokens the 'error' policy stops at the end of the context
  const r2 = await ctx.generate(g.prompts[6].ids, { temperature: 0, stopAtEos: false });
  t.is(r2.tokens.length, limit - g.prompts[6].ids.length + 1);
});

test('four contexts on one model generate in parallel, equal to sequential runs', async (t) => {
  const m = await model('tiny-b');
  const prompts = ['Hello', 'Bonjour le monde', 'Hola', 'Guten Tag'];
  const opts = { temperature: 0.9, maxTokens: 20, seed: 7, stopAtEos: false };
  const seq: number[][] = [];
  {
    await using c = await m.createContext();
    for (const p of prompts) seq.push((await c.generate(p, opts)).tokens);
  }
  const ctxs = await Promise.all(prompts.map(() => m.createContext()));
  const par = await Promise.all(ctxs.map((c, i) => c.generate(prompts[i]!, opts)));
  t.deepEqual(par.map((r) => r.tokens), seq);
  await Promise.all(ctxs.map((c) => c.dispose()));
});

test('calls on one context run in order; dispose rejects later calls; disposing the model disposes its contexts', async (t) => {
  const f = await fixtureGguf('tiny-b');
  const m = await loadModel(f);
  const ctx = await m.createContext();
  const idle = await m.createContext();
  const order: number[] = [];
  await Promise.all([0, 1, 2, 3].map((i) => ctx.generate('Hello', { maxTokens: 2, temperature: 0 }).then(() => order.push(i))));
  t.deepEqual(order, [0, 1, 2, 3]);
  const [expectedFirst] = (await ctx.generate('Hello', { maxTokens: 1, temperature: 0, stopAtEos: false })).tokens;

  // The model is disposed from within the running generation, as its first token arrives
  // (src/model.ts, src/context.ts: running work is aborted and a generation ends with
  // finishReason 'abort'; calls queued after it reject with ERR_XGLM_DISPOSED).
  let disposing: Promise<void> | undefined;
  const seen: number[] = [];
  const running = ctx.generate('Hello', {
    maxTokens: 50,
    temperature: 0,
    stopAtEos: false,
    onToken: (tok) => {
      seen.push(tok);
      disposing ??= m.dispose();
    },
  });
  // queued behind the generation before the dispose; settle handlers attached now
  const queuedScore = ctx.score(['x']).then(() => 'resolved', (e: unknown) => (e as { code?: string }).code);
  const queuedGen = ctx.generate('Hello', { maxTokens: 2, temperature: 0 }).then(() => 'resolved', (e: unknown) => (e as { code?: string }).code);
  const r = await running;
  t.is(r.finishReason, 'abort');
  // the abort lands between the first token and the second: nothing after the first is kept
  t.deepEqual(r.tokens, [expectedFirst]);
  t.deepEqual(seen, [expectedFirst]);
  t.is(await queuedScore, 'ERR_XGLM_DISPOSED');
  t.is(await queuedGen, 'ERR_XGLM_DISPOSED');
  await disposing;
  t.true(m.disposed);
  t.true(ctx.disposed);
  t.true(idle.disposed, 'every context of the model, also an idle one');
  await t.throwsAsync(ctx.score(['x']), { code: 'ERR_XGLM_DISPOSED' });
  await t.throwsAsync(ctx.generate('Hello').result, { code: 'ERR_XGLM_DISPOSED' });
  await t.throwsAsync(idle.score(['x']), { code: 'ERR_XGLM_DISPOSED' });
  t.throws(() => m.tokenize('x') && m.info, { code: 'ERR_XGLM_DISPOSED' });
});

test('invalid arguments are refused with typed errors before anything runs', async (t) => {
  const m = await model('tiny-a');
  await using ctx = await m.createContext();
  t.throws(() => ctx.generate([999999]), { code: 'ERR_XGLM_INVALID_ARGUMENT' });
  t.throws(() => ctx.generate('x', { maxTokens: -1 }), { code: 'ERR_XGLM_INVALID_ARGUMENT' });
  t.throws(() => ctx.generate('x', { sequence: 64 }), { code: 'ERR_XGLM_INVALID_ARGUMENT' });
  await t.throwsAsync(ctx.score('x' as unknown as string[]), { code: 'ERR_XGLM_INVALID_ARGUMENT' });
  await t.throwsAsync(ctx.logprobs('x', { top: -2 }), { code: 'ERR_XGLM_INVALID_ARGUMENT' });
  await t.throwsAsync(ctx.score(['word '.repeat(400)]), { code: 'ERR_XGLM_CONTEXT_OVERFLOW' });
  await t.throwsAsync(loadModel('/nonexistent.gguf'), { code: 'ERR_XGLM_INVALID_ARGUMENT' });
});

// The native loop runs at most 2 evaluations ahead of the tokens JS has seen (native/addon/context.cpp,
// LOOKAHEAD) and delivers each token as its own event-loop callback, so the JS thread gets turns
// while a generation runs: an immediate scheduled by the first onToken runs before the last
// token arrives, and the 1 ms interval ticks between the first and the last token. Blocking the
// event loop for the whole generation (e.g. a synchronous native loop, or one that queued all its
// tokens before JS saw any) fails both. The lag is reported, not asserted.
test('the JS thread stays responsive during generation (1 ms timer lag reported)', async (t) => {
  const m = await model('tiny-b');
  await using ctx = await m.createContext();
  const N = 200;
  let delivered = 0;
  let immediateAfter = -1;
  let ticksBetween = 0;
  const ticker = setInterval(() => {
    if (delivered >= 1 && delivered < N) ticksBetween++;
  }, 1);
  try {
    const lag = await measureTimerLag(
      () =>
        ctx.generate('Hello', {
          maxTokens: N,
          temperature: 0.8,
          seed: 1,
          stopAtEos: false,
          onToken: () => {
            if (++delivered === 1) setImmediate(() => (immediateAfter = delivered));
          },
        }).result,
    );
    t.is(lag.result.tokens.length, N);
    t.is(delivered, N);
    t.log(`timer ticks ${lag.ticks} (${ticksBetween} between the first and the last token), p99 lag ${lag.percentile(0.99).toFixed(2)} ms, max ${lag.maxMs.toFixed(2)} ms; the first token's immediate ran after token ${immediateAfter} of ${N}`);
    t.true(immediateAfter >= 1 && immediateAfter < N, `the immediate scheduled at the first token ran after token ${immediateAfter} of ${N}`);
    t.true(ticksBetween > 0, 'the interval ticked between the first and the last token');
  } finally {
    clearInterval(ticker);
  }
});

test('perplexity over a sliding window equals exp(mean NLL) of the same tokens scored directly', async (t) => {
  const m = await model('tiny-a');
  const g = golden('tiny-a');
  await using ctx = await m.createContext({ kvType: 'f32' });
  const text = g.prompts[6].text;
  const n = m.tokenize(text).length;
  // one window covering everything = plain scoring
  const whole = await ctx.perplexity(text, { window: n, stride: n - 1 });
  const [s] = await ctx.score([text]);
  t.is(whole.tokens, n - 1);
  t.true(Math.abs(whole.nll - -s!.logprob / (n - 1)) < 1e-9 * Math.abs(whole.nll) + 1e-9);
  // smaller windows score every token once
  const win = await ctx.perplexity(text, { window: 32, stride: 16 });
  t.is(win.tokens, n - 1);
  t.true(win.windows > 1);
  t.true(Number.isFinite(win.perplexity));
});

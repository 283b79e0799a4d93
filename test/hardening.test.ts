/**
 * Runtime misuse: every wrong or hostile use of the API has a defined result (a typed error,
 * an 'abort' finish, or the normal result) and leaves the process and the context usable.
 * "Usable" is checked against the oracle: after the misuse, greedy generation still equals
 * PyTorch's greedy continuation from the fixture's golden.json.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { SAMPLER_OFF } from '../src/sampler.js';
import { openEngineModel } from '../src/engine/model.js';
import { Generation, loadModel, XglmError, type XglmContext, type XglmModel } from '../src/index.js';
import { native } from '../src/native.js';
import { packageRoot } from '../src/paths.js';
import { fixtureGguf, golden as goldenOf } from './helpers/fixtures.js';

const golden = goldenOf('tiny-a');
/** A prompt of the fixture and PyTorch's greedy continuation of it. */
const prompt = golden.prompts[0];
const N_VOCAB = golden.model.config.vocab_size;
const N_CTX = golden.model.config.max_position_embeddings;

let shared: Promise<XglmModel> | undefined;
function model(): Promise<XglmModel> {
  shared ??= fixtureGguf('tiny-a', 'f32').then((f) => loadModel(f));
  return shared;
}
test.after.always(async () => {
  if (shared) await (await shared).dispose();
});

/** The code a call fails with, whether it throws at once or rejects later ('ok' if it does neither). */
async function codeOf(call: () => unknown): Promise<string> {
  try {
    const v = call();
    await (v instanceof Generation ? v.result : v);
    return 'ok';
  } catch (err) {
    if (!(err instanceof XglmError)) throw err;
    return err.code;
  }
}

/** The context still computes what PyTorch computes. */
async function assertGreedyMatchesOracle(t: { deepEqual: (a: unknown, b: unknown, m?: string) => void }, ctx: XglmContext, what: string): Promise<void> {
  const r = await ctx.generate(prompt.ids, { temperature: 0, maxTokens: prompt.greedy.ids.length, stopAtEos: false });
  t.deepEqual(r.tokens, prompt.greedy.ids, `greedy continuation after ${what}`);
}

test('token ids outside the vocabulary are refused (TS and native), and the context stays correct', async (t) => {
  const m = await model();
  await using ctx = await m.createContext({ kvType: 'f32', threads: 1 });
  for (const bad of [N_VOCAB, -1, 1.5, Number.NaN, 2 ** 31, Number.MAX_SAFE_INTEGER]) {
    t.is(await codeOf(() => ctx.generate([2, bad])), 'ERR_XGLM_INVALID_ARGUMENT', `generate([2, ${bad}])`);
    t.is(await codeOf(() => ctx.logprobs('x', { top: 1 }).then(() => ctx.generate([bad]))), 'ERR_XGLM_INVALID_ARGUMENT', `generate([${bad}])`);
  }
  t.is(await codeOf(() => ctx.generate('x', { logitBias: { [N_VOCAB]: 1 } })), 'ERR_XGLM_INVALID_ARGUMENT');
  t.is(await codeOf(() => ctx.generate('x', { logitBias: { [-1]: 1 } })), 'ERR_XGLM_INVALID_ARGUMENT');
  // below the TS checks: the native evaluate checks every id itself
  const engine = await openEngineModel(await fixtureGguf('tiny-a', 'f32'));
  const nctx = await native().Context.create(engine.native, { contextSize: 16, threads: 1 });
  for (const bad of [N_VOCAB, -1, 0x7fffffff]) {
    const err = await t.throwsAsync(nctx.evaluate(Int32Array.of(2, bad), Int32Array.of(0, 1), Int32Array.of(0, 0), Uint8Array.of(0, 1)));
    t.is((err as { code?: string }).code, 'ERR_XGLM_INVALID_ARGUMENT', `native token ${bad}`);
  }
  await nctx.dispose();
  engine.dispose();
  await assertGreedyMatchesOracle(t, ctx, 'refused ids');
});

test('positions beyond the context are refused; generation at the end of the context stops with length', async (t) => {
  const m = await model();
  await using ctx = await m.createContext({ kvType: 'f32', threads: 1 });
  const tooLong = Array.from({ length: N_CTX + 1 }, (_, i) => (i === 0 ? 2 : 4 + (i % 100)));
  t.is(await codeOf(() => ctx.generate(tooLong, { maxTokens: 1 })), 'ERR_XGLM_CONTEXT_OVERFLOW');
  t.is(await codeOf(() => ctx.generate(tooLong.slice(0, N_CTX - 2), { maxTokens: 5 })), 'ERR_XGLM_CONTEXT_OVERFLOW');
  t.is(await codeOf(() => ctx.score([tooLong.map(() => 'word').join(' ')])), 'ERR_XGLM_CONTEXT_OVERFLOW');
  const r = await ctx.generate(tooLong.slice(0, N_CTX - 3), { temperature: 0, stopAtEos: false });
  t.is(r.finishReason, 'length');
  // every evaluated token had a position; the last sampled token is returned, never evaluated
  t.is(r.usage.promptTokens + r.usage.completionTokens - 1, N_CTX);
  // native: positions outside [0, n_ctx_train) and sequence ids outside [0, 64)
  const engine = await openEngineModel(await fixtureGguf('tiny-a', 'f32'));
  const nctx = await native().Context.create(engine.native, { contextSize: 16, threads: 1 });
  for (const [pos, seq] of [[N_CTX, 0], [-1, 0], [0x7fffffff, 0], [0, 64], [0, -1]] as const) {
    const err = await t.throwsAsync(nctx.evaluate(Int32Array.of(2), Int32Array.of(pos), Int32Array.of(seq), Uint8Array.of(1)));
    t.regex(String((err as { code?: string }).code), /ERR_XGLM_(INVALID_ARGUMENT|CONTEXT_OVERFLOW)/, `native pos ${pos} seq ${seq}`);
  }
  // more tokens than the cache has cells
  const n = 17;
  const err = await t.throwsAsync(nctx.evaluate(new Int32Array(n).fill(5), Int32Array.from({ length: n }, (_, i) => i), new Int32Array(n), new Uint8Array(n)));
  t.is((err as { code?: string }).code, 'ERR_XGLM_CONTEXT_OVERFLOW');
  await nctx.dispose();
  engine.dispose();
  await assertGreedyMatchesOracle(t, ctx, 'overflows');
});

test('every call after dispose rejects with ERR_XGLM_DISPOSED; dispose twice is a no-op', async (t) => {
  const m = await loadModel(await fixtureGguf('tiny-a', 'f32'));
  const ctx = await m.createContext({ threads: 1 });
  await ctx.dispose();
  await ctx.dispose();
  t.is(await codeOf(() => ctx.generate('x')), 'ERR_XGLM_DISPOSED');
  await t.throwsAsync(ctx.score(['x']), { code: 'ERR_XGLM_DISPOSED' });
  await t.throwsAsync(ctx.scoreContinuations('a', ['b']), { code: 'ERR_XGLM_DISPOSED' });
  await t.throwsAsync(ctx.logprobs('x'), { code: 'ERR_XGLM_DISPOSED' });
  await t.throwsAsync(ctx.perplexity('x y z'), { code: 'ERR_XGLM_DISPOSED' });
  await m.dispose();
  await m.dispose();
  await t.throwsAsync(m.createContext(), { code: 'ERR_XGLM_DISPOSED' });
  t.throws(() => m.info, { code: 'ERR_XGLM_DISPOSED' });
  // the native objects themselves
  const engine = await openEngineModel(await fixtureGguf('tiny-a', 'f32'));
  const nctx = await native().Context.create(engine.native, { contextSize: 8, threads: 1 });
  await nctx.dispose();
  await nctx.dispose();
  for (const call of [
    () => nctx.evaluate(Int32Array.of(2), Int32Array.of(0), Int32Array.of(0), Uint8Array.of(1)),
    () => nctx.sample(0, SAMPLER_OFF),
    () => nctx.getLogits(0),
    () => nctx.kvClear(),
  ]) {
    const err = await t.throwsAsync(async () => call());
    t.is((err as { code?: string }).code, 'ERR_XGLM_DISPOSED');
  }
  t.notThrows(() => nctx.abort());
  engine.native.dispose();
  t.throws(() => engine.native.hparams, { code: 'ERR_XGLM_DISPOSED' } as never);
  const err = await t.throwsAsync(async () => native().Context.create(engine.native, {}));
  t.is((err as { code?: string }).code, 'ERR_XGLM_DISPOSED');
});

test('dispose during evaluation: the running call ends (abort or disposed), queued calls reject, nothing leaks into a new context', async (t) => {
  const m = await model();
  for (let round = 0; round < 20; round++) {
    const ctx = await m.createContext({ threads: 1, batchSize: 4 });
    const running = ctx.generate(prompt.ids.concat(prompt.ids, prompt.ids), { maxTokens: 40, temperature: 0, stopAtEos: false }).result;
    const queued = ctx.score([prompt.text]);
    if (round % 2) await new Promise((r) => setTimeout(r, round % 4));
    await ctx.dispose();
    const a = await running.then((r) => r.finishReason, (e: XglmError) => e.code);
    const b = await queued.then(() => 'ok', (e: XglmError) => e.code);
    t.true(['abort', 'length', 'ERR_XGLM_DISPOSED', 'ERR_XGLM_ABORTED'].includes(a), `running: ${a}`);
    t.true(['ok', 'ERR_XGLM_DISPOSED', 'ERR_XGLM_ABORTED'].includes(b), `queued: ${b}`);
  }
  await using fresh = await m.createContext({ kvType: 'f32', threads: 1 });
  await assertGreedyMatchesOracle(t, fresh, '20 disposals mid-evaluation');
});

test('abort storm: 300 generations aborted at random moments, then the context still matches the oracle', async (t) => {
  const m = await model();
  await using ctx = await m.createContext({ kvType: 'f32', threads: 1, batchSize: 4 });
  const outcomes: Record<string, number> = {};
  const pending: Array<Promise<unknown>> = [];
  for (let i = 0; i < 300; i++) {
    const ac = new AbortController();
    const gen = ctx.generate(i % 3 ? prompt.ids : prompt.text, { maxTokens: 8, temperature: 0, stopAtEos: false, signal: ac.signal });
    if (i % 5 === 0) ac.abort(); // before it starts
    else if (i % 5 === 1) queueMicrotask(() => ac.abort());
    else if (i % 5 === 2) setTimeout(() => ac.abort(), i % 3);
    else if (i % 5 === 3) gen.result.then(() => ac.abort(), () => ac.abort()); // after it ended
    pending.push(gen.result.then((r) => r.finishReason, (e: XglmError) => e.code).then((o) => (outcomes[o] = (outcomes[o] ?? 0) + 1)));
    if (i % 50 === 49) await Promise.all(pending.splice(0));
  }
  await Promise.all(pending);
  t.log(`outcomes: ${JSON.stringify(outcomes)}`);
  for (const o of Object.keys(outcomes)) t.true(['abort', 'length'].includes(o), o);
  t.true((outcomes.abort ?? 0) > 0);
  await assertGreedyMatchesOracle(t, ctx, 'the abort storm');
});

test('1,000 calls queued on one context all settle, in call order, with the same result', async (t) => {
  const m = await model();
  await using ctx = await m.createContext({ kvType: 'f32', threads: 1 });
  const order: number[] = [];
  const results = await Promise.all(
    Array.from({ length: 1000 }, (_, i) =>
      (i % 2
        ? ctx.generate(prompt.ids, { maxTokens: 2, temperature: 0, stopAtEos: false }).result.then((r) => r.tokens.join())
        : ctx.score([prompt.text]).then((r) => r[0]!.tokens.toString())
      ).then((v) => {
        order.push(i);
        return v;
      }),
    ),
  );
  t.deepEqual(order, Array.from({ length: 1000 }, (_, i) => i));
  t.deepEqual(new Set(results.filter((_, i) => i % 2)), new Set([prompt.greedy.ids.slice(0, 2).join()]));
  t.deepEqual(new Set(results.filter((_, i) => i % 2 === 0)), new Set([String(prompt.ids.length - 1)]));
});

test('worker threads terminated mid-generation leave the process healthy', async (t) => {
  const file = await fixtureGguf('tiny-a', 'f32');
  const entry = path.join(packageRoot, 'src', 'index.ts');
  const worker = `
    require('tsx/cjs');
    const { parentPort, workerData } = require('node:worker_threads');
    const { loadModel } = require(workerData.entry);
    (async () => {
      const model = await loadModel(workerData.file);
      const ctx = await model.createContext({ threads: 1, batchSize: 2 });
      let n = 0;
      // generate until terminated (one generation of the tiny model is over in milliseconds)
      for (;;) {
        await ctx.generate(workerData.ids.concat(workerData.ids), { maxTokens: 60, stopAtEos: false, onToken: () => n++ === 1 && parentPort.postMessage('generating') });
      }
    })();
  `;
  // In a child process: if terminating a worker crashed the process, only the child dies and
  // the test reports its signal.
  const parent = `
    const { Worker } = require('node:worker_threads');
    const { loadModel } = require(${JSON.stringify(entry)});
    (async () => {
      const codes = [];
      for (let i = 0; i < 5; i++) {
        const w = new Worker(${JSON.stringify(worker)}, { eval: true, workerData: { entry: ${JSON.stringify(entry)}, file: ${JSON.stringify(file)}, ids: ${JSON.stringify(prompt.ids)} } });
        await new Promise((resolve, reject) => { w.once('message', resolve); w.once('error', reject); });
        await new Promise((r) => setTimeout(r, i * 3));
        codes.push(await w.terminate());
      }
      const model = await loadModel(${JSON.stringify(file)});
      const ctx = await model.createContext({ kvType: 'f32', threads: 1 });
      const r = await ctx.generate(${JSON.stringify(prompt.ids)}, { temperature: 0, maxTokens: ${prompt.greedy.ids.length}, stopAtEos: false });
      console.log(JSON.stringify({ codes, tokens: r.tokens }));
      await model.dispose();
    })();
  `;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '-e', parent], { encoding: 'utf8', timeout: 120_000, cwd: packageRoot });
  t.is(r.signal, null, r.stderr);
  t.is(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { codes: number[]; tokens: number[] };
  t.deepEqual(out.codes, [1, 1, 1, 1, 1], 'every worker was still running when terminated');
  t.deepEqual(out.tokens, prompt.greedy.ids, 'greedy continuation in the same process afterwards');
});

test('process.exit during generation exits cleanly (code 0, no crash signal)', (t) => {
  const entry = path.join(packageRoot, 'src', 'index.ts');
  return fixtureGguf('tiny-a', 'f32').then((file) => {
    for (const when of ['prompt', 'tokens', 'dispose']) {
      const script = `
        const { loadModel } = require(${JSON.stringify(entry)});
        (async () => {
          const model = await loadModel(${JSON.stringify(file)});
          const ctx = await model.createContext({ threads: 2, batchSize: 2 });
          const ids = ${JSON.stringify(prompt.ids)};
          ctx.generate(ids.concat(ids, ids), {
            maxTokens: 20, stopAtEos: false,
            onPromptProgress: (done) => ${JSON.stringify(when)} === 'prompt' && done >= 4 && process.exit(0),
            onToken: () => ${JSON.stringify(when)} === 'tokens' && process.exit(0),
          });
          if (${JSON.stringify(when)} === 'dispose') { model.dispose(); setImmediate(() => process.exit(0)); }
        })();
      `;
      const r = spawnSync(process.execPath, ['--import', 'tsx', '-e', script], { encoding: 'utf8', timeout: 60_000, cwd: packageRoot });
      t.is(r.signal, null, `${when}: ${r.stderr}`);
      t.is(r.status, 0, `${when}: ${r.stderr}`);
    }
  });
});

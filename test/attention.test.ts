/**
 * The F16-cache attention op (native/attention.cpp), which replaces ggml's flash attention for
 * ubatches under 64 tokens, against the PyTorch oracle and against ggml's own path.
 *
 * F32 weights and an F16 KV cache, so the cache's rounding is the only approximation: every
 * prompt of both fixtures is decoded token by token (each step one query, the op's decode
 * case) and its last logits compared with PyTorch's. The same runs through ggml's flash
 * attention (XGLM_NO_CUSTOM_ATTN=1) give the error ggml makes with the same cache; the op keeps
 * Q in F32 and accumulates V in F32 where ggml rounds both to F16, so over all prompts it must
 * be closer to PyTorch than ggml is (measured: see the t.log lines). Invariants: chunks under 64
 * tokens stay within the same tolerance of token-by-token decoding, and two threads give the
 * same bits as one.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadModel, type EngineContext } from '../src/engine.js';
import { FIXTURE_NAMES, argmax, fixtureGguf, golden, maxDiff, readF32, type FixtureName } from './helpers/fixture-gguf.js';

const F16_CACHE_TOLERANCE = 1e-2; // as test/engine.test.ts allows an F16 file
const root = path.join(__dirname, '..');
const positions = (n: number, start = 0) => Array.from({ length: n }, (_, i) => start + i);

/** Evaluates `ids` in chunks of the given sizes (cycled); returns the last position's logits. */
async function lastLogits(ctx: EngineContext, ids: number[], chunks: number[]): Promise<Float32Array> {
  await ctx.kvClear();
  let at = 0;
  for (let c = 0; at < ids.length; c++) {
    const n = Math.min(chunks[c % chunks.length]!, ids.length - at);
    await ctx.evaluate({ tokens: ids.slice(at, at + n), positions: positions(n, at) });
    at += n;
  }
  return ctx.getLogits(lastRow(ids.length, chunks));
}

/** Row of the last token in the last evaluated chunk. */
function lastRow(n: number, chunks: number[]): number {
  let at = 0;
  for (let c = 0; ; c++) {
    const size = Math.min(chunks[c % chunks.length]!, n - at);
    if (at + size >= n) return size - 1;
    at += size;
  }
}

async function withF16Cache<T>(name: FixtureName, threads: number, fn: (ctx: EngineContext) => Promise<T>): Promise<T> {
  const model = await loadModel(await fixtureGguf(name, 'f32'));
  const ctx = await model.createContext({ kvType: 'f16', threads, contextSize: 256 });
  try {
    return await fn(ctx);
  } finally {
    await ctx.dispose();
    model.dispose();
  }
}

function withEnv<T>(key: string, value: string | undefined, fn: () => Promise<T>): Promise<T> {
  const old = process.env[key];
  if (value === undefined) delete process.env[key];
  else process.env[key] = value;
  return fn().finally(() => {
    if (old === undefined) delete process.env[key];
    else process.env[key] = old;
  });
}

for (const name of FIXTURE_NAMES) {
  const g = golden(name);

  test.serial(`${name}: token-by-token decoding over an F16 cache matches PyTorch, closer than ggml's flash attention`, async (t) => {
    const errors = { ours: 0, ggml: 0 };
    for (const who of ['ours', 'ggml'] as const) {
      await withEnv('XGLM_NO_CUSTOM_ATTN', who === 'ggml' ? '1' : undefined, () =>
        withF16Cache(name, 1, async (ctx) => {
          for (const p of g.prompts) {
            const ours = await lastLogits(ctx, p.ids, [1]);
            const { diff, scale } = maxDiff(ours, readF32(name, p.last_logits.file));
            errors[who] += diff / scale;
            if (who === 'ours') {
              t.true(diff <= F16_CACHE_TOLERANCE * scale, `${p.id}: maxdiff ${diff} > ${F16_CACHE_TOLERANCE} × ${scale}`);
              t.is(argmax(ours), p.last_logits.argmax, p.id);
            }
          }
        }),
      );
    }
    t.log(`sum over ${g.prompts.length} prompts of max|diff| / max|logit|: op ${errors.ours.toExponential(3)}, ggml flash attention ${errors.ggml.toExponential(3)}`);
    t.true(errors.ours < errors.ggml, 'the F32-accumulating op is closer to PyTorch than ggml with the same F16 cache');
  });

  test.serial(`${name}: chunks under 64 tokens stay near token-by-token decoding; two threads give the same bits as one`, async (t) => {
    const p = g.prompts.reduce((a, b) => (b.ids.length > a.ids.length ? b : a));
    const ids = p.ids.slice(0, 200);
    const chunks = [7, 63, 1, 30, 2];
    const one = await withF16Cache(name, 1, (ctx) => lastLogits(ctx, ids, [1]));
    const chunked = await withF16Cache(name, 1, (ctx) => lastLogits(ctx, ids, chunks));
    // the op's rows do not depend on the ubatch, but the weights' products of a chunk round
    // differently from one column's, and the cache holds their results
    const { diff, scale } = maxDiff(chunked, one);
    t.log(`chunks of ${chunks.join(', ')} vs one token at a time: max|diff| ${(diff / scale).toExponential(2)} of max|logit|`);
    t.true(diff <= F16_CACHE_TOLERANCE * scale);
    t.is(maxDiff(await withF16Cache(name, 2, (ctx) => lastLogits(ctx, ids, [1])), one).diff, 0, 'two threads, one token at a time');
    t.is(maxDiff(await withF16Cache(name, 2, (ctx) => lastLogits(ctx, ids, chunks)), chunked).diff, 0, 'two threads, chunks');
  });
}

test.serial('XGLM_LOG says when the op runs; XGLM_NO_CUSTOM_ATTN=1 and an F32 cache keep ggml flash attention', async (t) => {
  const file = await fixtureGguf('tiny-a', 'f32');
  const script = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'xglm-attn-')), 'attend.ts');
  t.teardown(() => fs.rmSync(path.dirname(script), { recursive: true, force: true }));
  fs.writeFileSync(
    script,
    `import { loadModel } from ${JSON.stringify(path.join(root, 'src', 'engine.js'))};
(async () => {
  const model = await loadModel(${JSON.stringify(file)});
  const ctx = await model.createContext({ kvType: process.argv[2] as 'f16', threads: 1, contextSize: 64 });
  await ctx.evaluate({ tokens: [2, 5, 9], positions: [0, 1, 2] });
  await ctx.dispose();
  model.dispose();
})();
`,
  );
  const run = (kvType: string, env: Record<string, string>) => {
    const childEnv: NodeJS.ProcessEnv = { ...process.env, XGLM_LOG: '1', ...env };
    if (!('XGLM_NO_CUSTOM_ATTN' in env)) delete childEnv.XGLM_NO_CUSTOM_ATTN;
    const r = spawnSync(process.execPath, ['--import', 'tsx', script, kvType], { cwd: root, env: childEnv, encoding: 'utf8' });
    t.is(r.status, 0, r.stderr);
    return r.stderr;
  };
  const line = (n: number) => `${n} layers attend through the F16 attention op`;
  const layers = golden('tiny-a').model.config.num_layers;
  const avx2 = ['avx2', 'fma', 'f16c'].every((f) => fs.readFileSync('/proc/cpuinfo', 'utf8').includes(` ${f}`));
  if (process.arch === 'x64' && avx2) t.true(run('f16', {}).includes(line(layers)));
  else t.log('no AVX2+FMA+F16C x86-64 CPU: ggml flash attention only');
  t.false(run('f16', { XGLM_NO_CUSTOM_ATTN: '1' }).includes('attention op'));
  t.false(run('f32', {}).includes('attention op'));
});

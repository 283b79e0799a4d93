/**
 * Electron's V8 memory cage forbids ArrayBuffers that point at memory V8 does not own
 * (external buffers). Every typed array the addon hands to JS must be JS-owned: allocated by
 * V8 and filled by copying. Checked two ways: the sources never create external buffers, and
 * every returned array's buffer can be transferred (detached) like any JS-owned one.
 */
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { openEngineModel } from '../src/engine/model.js';
import { fixtureGguf } from './helpers/fixtures.js';

test('the native sources create no external ArrayBuffer or Buffer', (t) => {
  const dir = path.join(__dirname, '..', 'native');
  const external = [
    /napi_create_external_(array)?buffer/,
    /node_api_create_external/,
    /ArrayBuffer::New\([^)]*,[^)]*,/, // New(env, data, length[, finalizer]) wraps foreign memory
    /Buffer<[^>]*>::New\([^)]*,[^)]*,/,
    /Buffer<[^>]*>::NewOrCopy/,
  ];
  let files = 0;
  // every folder: native/addon, native/engine, native/engine/ops, …
  const names = (fs.readdirSync(dir, { recursive: true }) as string[]).filter((n) => /\.(cpp|h)$/.test(n));
  for (const name of names) {
    const text = fs.readFileSync(path.join(dir, name), 'utf8');
    files++;
    for (const re of external) t.notRegex(text, re, `${name} creates an external buffer`);
  }
  t.true(files > 5);
});

function assertTransferable(t: import('ava').ExecutionContext, a: ArrayBufferView, what: string): void {
  const bufferBytes = a.buffer.byteLength;
  t.true(a.byteLength > 0, what);
  const moved = structuredClone(a.buffer, { transfer: [a.buffer as ArrayBuffer] });
  t.is(moved.byteLength, bufferBytes, `${what}: the transferred buffer has its bytes`);
  t.is(a.byteLength, 0, `${what} was not detached by the transfer`);
}

test('every typed array the engine returns is JS-owned (transferable)', async (t) => {
  const model = await openEngineModel(await fixtureGguf('tiny-a'));
  const ctx = await model.createContext({ keepActivations: true, threads: 1 });
  await ctx.evaluate({ tokens: [2, 100, 200, 300], positions: [0, 1, 2, 3], logits: 'all' });
  assertTransferable(t, await ctx.getLogits(3), 'getLogits');
  const lp = await ctx.logprobs([0, 1, 2], [100, 200, 300], 5);
  assertTransferable(t, lp.logprobs, 'logprobs.logprobs');
  assertTransferable(t, lp.topIds, 'logprobs.topIds');
  assertTransferable(t, lp.topLogprobs, 'logprobs.topLogprobs');
  const act = await ctx.getActivation('l_out-1');
  t.truthy(act);
  assertTransferable(t, act!, 'getActivation');
  await ctx.dispose();
  model.dispose();
});

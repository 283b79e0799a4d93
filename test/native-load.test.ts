import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { native } from '../src/native.js';
import { packageRoot } from '../src/paths.js';
import { halfToFloat } from './helpers/half.js';

test('the addon loads and reports the CPU code it runs', (t) => {
  const info = native().backendInfo();
  t.regex(info.variant, /^[a-z0-9_.]+$/);
  t.is(info.ggmlVersion, '0.23.0');
  t.true(Array.isArray(info.features));
  if (info.dynamic) t.true(info.available.includes(info.variant));
  t.log(`variant ${info.variant}; features ${info.features.join(' ')}`);
});

test('quantizeRows matches ggml block layout: q8_0 scale and values', async (t) => {
  const addon = native();
  const Q8_0 = 8;
  t.is(addon.ggmlTypeInfo(Q8_0).name, 'q8_0');
  // One block of 32 values; q8_0 = f16 scale d = max|x|/127, then round(x/d) as int8.
  const src = new Float32Array(32).map((_, i) => i - 16);
  const dst = new Uint8Array(addon.rowSize(Q8_0, 32));
  t.is(dst.length, 34);
  t.is(await addon.quantizeRows(Q8_0, src, dst, 1, 32, 2), 34);
  const view = new DataView(dst.buffer);
  const d = 16 / 127;
  t.true(Math.abs(halfToFloat(view.getUint16(0, true)) - d) < 1e-4);
  const q = new Int8Array(dst.buffer, 2, 32);
  t.deepEqual(Array.from(q), Array.from(src, (x) => Math.round(x / halfToFloat(view.getUint16(0, true)))));
});

test('quantizeRows refuses rows that do not fit the block size', (t) => {
  const addon = native();
  const err = t.throws(() => addon.quantizeRows(2, new Float32Array(48), new Uint8Array(100), 1, 48, 1));
  t.regex(err!.message, /block size 32/);
});


function threadCount(): number {
  return fs.readdirSync('/proc/self/task').length;
}

test('loads in 4 worker threads at once; terminated workers leave no thread behind', async (t) => {
  native(); // loaded in the main thread too
  const before = threadCount();
  const script = `
    const { parentPort, workerData } = require('node:worker_threads');
    const addon = require(workerData.file);
    const src = new Float32Array(256 * 64).map(() => Math.random());
    const dst = new Uint8Array(addon.rowSize(2, 256) * 64);
    addon.quantizeRows(2, src, dst, 64, 256, 2).then((n) => parentPort.postMessage({ variant: addon.backendInfo().variant, n }));
  `;
  // The addon native() loaded when XGLM_ADDON_PATH names one (e.g. the arm64 prebuild under qemu).
  const file = process.env.XGLM_ADDON_PATH ? path.resolve(process.env.XGLM_ADDON_PATH) : path.join(packageRoot, 'build', 'Release', 'xglm.node');
  const addonFile = fs.existsSync(file) ? file : (await import('../src/native.js')).addonCandidates()[0]!;
  for (let round = 0; round < 3; round++) {
    const workers = Array.from({ length: 4 }, () => new Worker(script, { eval: true, workerData: { file: addonFile } }));
    const results = await Promise.all(workers.map((w) => new Promise<{ variant: string; n: number }>((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
    })));
    for (const r of results) t.is(r.n, 64 * 144);
    await Promise.all(workers.map((w) => w.terminate()));
  }
  // Worker threads are joined by terminate(); give the OS a moment to reap them.
  let after = threadCount();
  for (let i = 0; i < 50 && after > before; i++) {
    await new Promise((r) => setTimeout(r, 20));
    after = threadCount();
  }
  t.true(after <= before, `threads before ${before}, after ${after}`);
});

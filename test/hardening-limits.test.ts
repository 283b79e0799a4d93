/**
 * A file whose declared sizes would need more memory than the machine has is refused before
 * anything is allocated, with a message that says so. The files are sparse: a header written
 * by the project's GGUF writer, then a hole the size of the tensors (all-zero q4_0 weights),
 * so a 0.5 GB "model" costs no disk.
 */
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openEngineModel } from '../src/engine/model.js';
import { XglmError } from '../src/errors.js';
import { GgmlType, type GgufKv, type GgufTensorSpec, encodeGgufHeader, ggmlTensorBytes, kv } from '../src/gguf/index.js';
import { readGgufHeader } from '../src/gguf/index.js';
import { decodeGguf, encodeGguf } from './fuzz/gguf-codec.js';
import { prepareSeeds, SEEDS_DIR } from './fuzz/targets.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xglm-limits-'));
test.after.always(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** An XGLM file with these hyperparameters and no position table (the loader computes it). */
function sparseXglm(name: string, nEmbd: number, nCtx: number): string {
  const nFf = 32;
  const nVocab = 8;
  const meta: GgufKv[] = [
    kv.str('general.architecture', 'xglm'),
    kv.u32('xglm.context_length', nCtx),
    kv.u32('xglm.embedding_length', nEmbd),
    kv.u32('xglm.feed_forward_length', nFf),
    kv.u32('xglm.block_count', 1),
    kv.u32('xglm.attention.head_count', nEmbd / 128),
    kv.f32('xglm.attention.layer_norm_epsilon', 1e-5),
  ];
  const q = GgmlType.Q4_0;
  const f = GgmlType.F32;
  const t = (n: string, dims: number[], type: number): GgufTensorSpec => ({ name: n, dims, type });
  const tensors = [
    t('token_embd.weight', [nEmbd, nVocab], q),
    t('blk.0.attn_norm.weight', [nEmbd], f),
    t('blk.0.attn_norm.bias', [nEmbd], f),
    t('blk.0.attn_qkv.weight', [nEmbd, 3 * nEmbd], q),
    t('blk.0.attn_qkv.bias', [3 * nEmbd], f),
    t('blk.0.attn_output.weight', [nEmbd, nEmbd], q),
    t('blk.0.attn_output.bias', [nEmbd], f),
    t('blk.0.ffn_norm.weight', [nEmbd], f),
    t('blk.0.ffn_norm.bias', [nEmbd], f),
    t('blk.0.ffn_up.weight', [nEmbd, nFf], q),
    t('blk.0.ffn_up.bias', [nFf], f),
    t('blk.0.ffn_down.weight', [nFf, nEmbd], q),
    t('blk.0.ffn_down.bias', [nEmbd], f),
    t('output_norm.weight', [nEmbd], f),
    t('output_norm.bias', [nEmbd], f),
  ];
  const layout = encodeGgufHeader(meta, tensors);
  const file = path.join(tmp, name);
  fs.writeFileSync(file, layout.header);
  fs.truncateSync(file, layout.fileSize);
  return file;
}

const physicalMb = os.totalmem() / 2 ** 20;

test('a position table larger than physical memory is refused before it is allocated', async (t) => {
  // 16,384 × 2^20 float32 positions = 64 GB, more than this machine (and CI's 24 GB) has
  const file = sparseXglm('huge-table.gguf', 16384, 1 << 20);
  const header = readGgufHeader(file);
  t.is(header.fileSize, fs.statSync(file).size, 'the TS reader accepts the file: every tensor is inside it');
  const needMb = (2 * 4 * 16384 * 2 ** 20) / 2 ** 20;
  t.true(needMb > physicalMb, `the test needs a machine with less than ${needMb} MB`);
  const rssBefore = process.memoryUsage.rss();
  const err = await t.throwsAsync(openEngineModel(file, { useRepack: false }), { instanceOf: XglmError });
  t.is(err!.code, 'ERR_XGLM_MODEL_LOAD');
  t.regex(err!.message, /needs \d+ MB, more memory than this machine has \(\d+ MB\)/);
  t.true(process.memoryUsage.rss() - rssBefore < 256 * 2 ** 20, 'nothing big was allocated');
  t.log(err!.message);
});

test('a KV cache larger than physical memory is refused with a message that says so', async (t) => {
  const file = sparseXglm('huge-kv.gguf', 16384, 16);
  const model = await openEngineModel(file, { useRepack: false });
  try {
    // 2 × 1 layer × 16,384 × 4 bytes × 2^24 cells = 2 TB
    const err = await t.throwsAsync(model.createContext({ contextSize: 1 << 24, kvType: 'f32', threads: 1 }), { instanceOf: XglmError });
    t.regex(err!.message, /KV cache of 16777216 cells needs \d+ MB, more memory than this machine has/);
    t.log(err!.message);
    // a context that fits still works on the same model
    const ctx = await model.createContext({ contextSize: 16, threads: 1 });
    await ctx.evaluate({ tokens: [2, 5], positions: [0, 1] });
    t.is((await ctx.getLogits(1)).length, 8);
    await ctx.dispose();
  } finally {
    model.dispose();
  }
});

test('tensor data that general.alignment leaves misaligned is refused (found by the fuzzer under UBSan)', async (t) => {
  const seeds = SEEDS_DIR;
  await prepareSeeds(seeds);
  // the converter's q8_0 file re-laid with general.alignment 1: tensors back to back, so
  // q8_0's 34-byte blocks leave most of them off any 4-byte boundary
  const g = decodeGguf(fs.readFileSync(path.join(seeds, 'small-q8_0.gguf')));
  const one = Buffer.alloc(4);
  one.writeUInt32LE(1);
  g.kv = [...g.kv.filter((k) => k.key !== 'general.alignment'), { key: 'general.alignment', type: 4, value: one }];
  g.alignment = 1;
  const parts: Uint8Array[] = [];
  let at = 0n;
  g.tensors = g.tensors.map((x) => {
    const size = ggmlTensorBytes(x.type, x.dims.map(Number))!;
    parts.push(g.data.subarray(Number(x.offset), Number(x.offset) + size));
    const moved = { ...x, offset: at };
    at += BigInt(size);
    return moved;
  });
  g.data = Buffer.concat(parts);
  // and a metadata string whose length puts the data section one byte past a 4-byte boundary
  const base = g.kv;
  for (let n = 0; n < 4; n++) {
    const note = Buffer.alloc(8 + n, 0x61);
    note.writeBigUInt64LE(BigInt(n));
    g.kv = [...base, { key: 'general.description', type: 8, value: note }];
    if ((encodeGguf(g).bytes.length - g.data.length) % 4 === 1) break;
  }
  const file = path.join(tmp, 'misaligned.gguf');
  fs.writeFileSync(file, encodeGguf(g).bytes);
  const header = readGgufHeader(file);
  t.true(header.tensors.some((x) => (header.dataOffset + x.offset) % 4 !== 0), 'some tensor data starts off a 4-byte boundary');
  const err = await t.throwsAsync(openEngineModel(file), { instanceOf: XglmError });
  t.is(err!.code, 'ERR_XGLM_MODEL_LOAD');
  t.regex(err!.message, /starts at byte \d+, not a multiple of 4 \(general.alignment is too small\)/);
});

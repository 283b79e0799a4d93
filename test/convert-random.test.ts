import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { convert, writeRandomCheckpoint } from '../src/convert/index.js';
import { floatToHalf } from '../src/convert/random-checkpoint.js';
import { GgmlType, GgufReader, ggmlTypeName } from '../src/gguf/index.js';
import { native } from '../src/native.js';
import { parseSentencePieceModel } from '../src/tokenizer/spm-model.js';
import { halfToFloat } from './helpers/half.js';
import { spmModelPath } from './helpers/fixtures.js';

const tinyASpm = spmModelPath('tiny-a');
const shape = { dModel: 256, nLayers: 8, nHeads: 4, ffnDim: 512, vocabSize: 2600, maxPositions: 64 };

function tmpDir(t: { teardown(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xglm-random-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('random checkpoints are seeded: same seed, same bytes; another seed, other weights', async (t) => {
  const dir = tmpDir(t);
  const small = { ...shape, nLayers: 1, vocabSize: 1500 };
  await writeRandomCheckpoint(path.join(dir, 'a'), { ...small, seed: 7, dtype: 'F16' });
  await writeRandomCheckpoint(path.join(dir, 'b'), { ...small, seed: 7, dtype: 'F16' });
  await writeRandomCheckpoint(path.join(dir, 'c'), { ...small, seed: 8, dtype: 'F16' });
  const read = (d: string, f: string) => fs.readFileSync(path.join(dir, d, f));
  for (const f of ['config.json', 'model.safetensors', 'sentencepiece.bpe.model']) t.true(read('a', f).equals(read('b', f)), f);
  t.false(read('a', 'model.safetensors').equals(read('c', 'model.safetensors')));
  const config = JSON.parse(read('a', 'config.json').toString());
  t.like(config, { model_type: 'xglm', d_model: 256, num_layers: 1, vocab_size: 1500, torch_dtype: 'float16' });
});

test('the generated tokenizer has vocab_size − 8 pieces and keeps the base normalizer', async (t) => {
  const dir = tmpDir(t);
  const base = parseSentencePieceModel(fs.readFileSync(tinyASpm));
  for (const vocabSize of [1000, 2008, 5000]) {
    const out = path.join(dir, String(vocabSize));
    await writeRandomCheckpoint(out, { ...shape, nLayers: 1, vocabSize });
    const spm = parseSentencePieceModel(fs.readFileSync(path.join(out, 'sentencepiece.bpe.model')));
    t.is(spm.pieces.length, vocabSize - 8);
    t.deepEqual(spm.pieces.slice(0, 50), base.pieces.slice(0, 50));
    t.is(new Set(spm.pieces.map((p) => p.piece)).size, spm.pieces.length, 'pieces are unique');
    t.deepEqual(spm.normalizerSpec, base.normalizerSpec);
    t.deepEqual(spm.trainerSpec, base.trainerSpec);
  }
});

test('float16 weights are rounded as ggml rounds them', async (t) => {
  const values = new Float32Array(4096);
  let s = 12345;
  for (let i = 0; i < values.length; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    values[i] = ((s / 2 ** 32) * 2 - 1) * 2 ** ((i % 48) - 30);
  }
  values.set([0, -0, 65504, 65520, 1e6, -1e6, 2 ** -24, 2 ** -25, 3 * 2 ** -26, 1 + 2 ** -11, 1 + 3 * 2 ** -11, Infinity, -Infinity], 0);
  const ggml = new Uint8Array(values.length * 2);
  await native().quantizeRows(GgmlType.F16, values, ggml, 1, values.length, 1);
  const expected = new Uint16Array(ggml.buffer);
  let mismatches = 0;
  for (let i = 0; i < values.length; i++) if (floatToHalf(values[i]!) !== expected[i]) mismatches++;
  t.is(mismatches, 0);
});

test('a generated 8-layer checkpoint converts; q4_k_m keeps ffn_down at q6_K in llama.cpp\'s layers', async (t) => {
  const dir = tmpDir(t);
  await writeRandomCheckpoint(path.join(dir, 'm'), { ...shape, seed: 3 });
  const result = await convert(path.join(dir, 'm'), path.join(dir, 'm.gguf'), { type: 'q4_k_m' });
  t.deepEqual(result.fallbacks, []);
  const typeOf = (name: string) => ggmlTypeName(result.tensors.find((x) => x.name === name)!.type);
  t.is(typeOf('token_embd.weight'), 'q6_K');
  t.is(typeOf('position_embd.weight'), 'f32');
  // llama.cpp's use_more_bits for 8 layers: i < 1, i >= 7, (i - 1) % 3 == 2.
  t.deepEqual(
    Array.from({ length: 8 }, (_, i) => typeOf(`blk.${i}.ffn_down.weight`)),
    ['q6_K', 'q4_K', 'q4_K', 'q6_K', 'q4_K', 'q4_K', 'q6_K', 'q6_K'],
  );
  for (let i = 0; i < 8; i++) {
    t.is(typeOf(`blk.${i}.attn_qkv.weight`), 'q5_K');
    t.is(typeOf(`blk.${i}.attn_output.weight`), 'q4_K');
    t.is(typeOf(`blk.${i}.ffn_up.weight`), 'q4_K');
  }
  const r = GgufReader.open(path.join(dir, 'm.gguf'));
  t.teardown(() => r.close());
  t.is(r.get('xglm.block_count'), 8);
  t.is(r.get('general.file_type'), 15);
});

test('bf16 and f16 checkpoints as safetensors and as pytorch_model.bin give the same GGUF, values exact', async (t) => {
  const dir = tmpDir(t);
  for (const dtype of ['BF16', 'F16'] as const) {
    const ckpt = path.join(dir, dtype);
    const sizes = await writeRandomCheckpoint(ckpt, { ...shape, nLayers: 2, dtype, formats: ['safetensors', 'pytorch'] });
    t.true(sizes.safetensorsBytes! > 0 && sizes.pytorchBytes! > 0);
    await convert(ckpt, path.join(dir, `${dtype}-st.gguf`), { type: 'f32', weights: 'safetensors' });
    await convert(ckpt, path.join(dir, `${dtype}-pt.gguf`), { type: 'f32', weights: 'pytorch' });
    t.true(fs.readFileSync(path.join(dir, `${dtype}-st.gguf`)).equals(fs.readFileSync(path.join(dir, `${dtype}-pt.gguf`))), dtype);
    // Each float32 in the GGUF is exactly the 16-bit source value (read here without src/convert).
    const st = fs.readFileSync(path.join(ckpt, 'model.safetensors'));
    const n = Number(st.readBigUInt64LE(0));
    const info = JSON.parse(st.toString('utf8', 8, 8 + n))['model.layers.1.fc2.weight'] as { data_offsets: [number, number] };
    const src = st.subarray(8 + n + info.data_offsets[0], 8 + n + info.data_offsets[1]);
    const r = GgufReader.open(path.join(dir, `${dtype}-st.gguf`));
    const gguf = r.readTensorBytes(r.tensor('blk.1.ffn_down.weight')!);
    r.close();
    let mismatches = 0;
    for (let i = 0; i < src.length / 2; i++) {
      const bits = src.readUInt16LE(2 * i);
      const value = gguf.readFloatLE(4 * i);
      const want = dtype === 'BF16' ? new Float32Array(new Uint32Array([bits << 16]).buffer)[0]! : halfToFloat(bits);
      if (value !== want) mismatches++;
    }
    t.is(mismatches, 0, dtype);
  }
});


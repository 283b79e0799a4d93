import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { OUTPUT_TYPES, type OutputTypeName, convert, quantize } from '../src/convert/index.js';
import { tokenizerJsonFromSentencePiece } from './helpers/spm-tokenizer-json.js';
import { GgmlType, type GgufArray, GgufReader, type GgufValue, GgufValueType, ggmlTypeName } from '../src/gguf/index.js';
import { halfToFloat } from './helpers/half.js';
import { FIXTURE_NAMES, fixtureDir, golden as goldenOf, type FixtureName, type XglmConfig } from './helpers/fixtures.js';

const ALL_TYPES = Object.keys(OUTPUT_TYPES) as OutputTypeName[];

const configOf = (name: FixtureName): XglmConfig => JSON.parse(fs.readFileSync(path.join(fixtureDir(name), 'config.json'), 'utf8')) as XglmConfig;

function tmpDir(t: { teardown(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xglm-convert-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A safetensors reader written for the test, independent of src/convert. */
function loadSafetensors(file: string): Map<string, { shape: number[]; values: Float32Array }> {
  const bytes = fs.readFileSync(file);
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.toString('utf8', 8, 8 + n));
  const out = new Map<string, { shape: number[]; values: Float32Array }>();
  for (const [name, info] of Object.entries<{ dtype: string; shape: number[]; data_offsets: [number, number] }>(header)) {
    if (name === '__metadata__') continue;
    const raw = bytes.subarray(8 + n + info.data_offsets[0], 8 + n + info.data_offsets[1]);
    const count = info.shape.reduce((a, b) => a * b, 1);
    const values = new Float32Array(count);
    for (let i = 0; i < count; i++) values[i] = info.dtype === 'F32' ? raw.readFloatLE(4 * i) : halfToFloat(raw.readUInt16LE(2 * i));
    out.set(name, { shape: info.shape, values });
  }
  return out;
}


function f32Tensor(reader: GgufReader, name: string): Float32Array {
  const info = reader.tensor(name)!;
  const bytes = reader.readTensorBytes(info);
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
}

const converted = new Map<string, Promise<string>>();
/** Converts once per (fixture, source, type) and shares the file among tests. */
function convertOnce(fixture: FixtureName, weights: 'safetensors' | 'pytorch', type: OutputTypeName): Promise<string> {
  const key = `${fixture}-${weights}-${type}`;
  if (!converted.has(key)) {
    const out = path.join(sharedDir, `${key}.gguf`);
    converted.set(key, convert(fixtureDir(fixture), out, { type, weights }).then(() => out));
  }
  return converted.get(key)!;
}
const sharedDir = fs.mkdtempSync(path.join(os.tmpdir(), 'xglm-convert-shared-'));
test.after.always(() => fs.rmSync(sharedDir, { recursive: true, force: true }));

for (const fixture of FIXTURE_NAMES) {
  test(`${fixture}: safetensors and pytorch_model.bin give byte-identical GGUF files for every type`, async (t) => {
    for (const type of ALL_TYPES) {
      const [a, b] = await Promise.all([convertOnce(fixture, 'safetensors', type), convertOnce(fixture, 'pytorch', type)]);
      t.true(fs.readFileSync(a).equals(fs.readFileSync(b)), type);
    }
  });

  test(`${fixture}: metadata keys and values follow docs/converting.md and config.json`, async (t) => {
    const cfg = configOf(fixture);
    const golden = goldenOf(fixture);
    const r = GgufReader.open(await convertOnce(fixture, 'safetensors', 'f16'));
    t.teardown(() => r.close());
    t.deepEqual(
      r.kv.map((e) => e.key),
      [
        'general.architecture',
        'general.name',
        'general.file_type',
        'general.quantization_version',
        'xglm.context_length',
        'xglm.embedding_length',
        'xglm.feed_forward_length',
        'xglm.block_count',
        'xglm.attention.head_count',
        'xglm.attention.head_count_kv',
        'xglm.attention.layer_norm_epsilon',
        'xglm.embedding_scale',
        'tokenizer.ggml.model',
        'tokenizer.ggml.pre',
        'tokenizer.ggml.tokens',
        'tokenizer.ggml.scores',
        'tokenizer.ggml.token_type',
        'tokenizer.ggml.precompiled_charsmap',
        'tokenizer.ggml.add_space_prefix',
        'tokenizer.ggml.remove_extra_whitespaces',
        'tokenizer.ggml.add_bos_token',
        'tokenizer.ggml.add_eos_token',
        'tokenizer.ggml.bos_token_id',
        'tokenizer.ggml.eos_token_id',
        'tokenizer.ggml.unknown_token_id',
        'tokenizer.ggml.seperator_token_id',
        'tokenizer.ggml.padding_token_id',
      ],
    );
    const expect: Record<string, [GgufValueType, GgufValue]> = {
      'general.architecture': [GgufValueType.STRING, 'xglm'],
      'general.name': [GgufValueType.STRING, fixture],
      'general.file_type': [GgufValueType.UINT32, 1],
      'general.quantization_version': [GgufValueType.UINT32, 2],
      'xglm.context_length': [GgufValueType.UINT32, cfg.max_position_embeddings],
      'xglm.embedding_length': [GgufValueType.UINT32, cfg.d_model],
      'xglm.feed_forward_length': [GgufValueType.UINT32, cfg.ffn_dim],
      'xglm.block_count': [GgufValueType.UINT32, cfg.num_layers],
      'xglm.attention.head_count': [GgufValueType.UINT32, cfg.attention_heads],
      'xglm.attention.head_count_kv': [GgufValueType.UINT32, cfg.attention_heads],
      'xglm.attention.layer_norm_epsilon': [GgufValueType.FLOAT32, Math.fround(golden.model.layer_norm_eps)],
      'xglm.embedding_scale': [GgufValueType.FLOAT32, Math.fround(golden.model.embed_scale)],
      'tokenizer.ggml.model': [GgufValueType.STRING, 't5'],
      'tokenizer.ggml.pre': [GgufValueType.STRING, 'default'],
      'tokenizer.ggml.add_space_prefix': [GgufValueType.BOOL, true],
      'tokenizer.ggml.remove_extra_whitespaces': [GgufValueType.BOOL, true],
      'tokenizer.ggml.add_bos_token': [GgufValueType.BOOL, true],
      'tokenizer.ggml.add_eos_token': [GgufValueType.BOOL, false],
      'tokenizer.ggml.bos_token_id': [GgufValueType.UINT32, 2],
      'tokenizer.ggml.eos_token_id': [GgufValueType.UINT32, 2],
      'tokenizer.ggml.unknown_token_id': [GgufValueType.UINT32, golden.tokenizer.special_ids['<unk>']],
      'tokenizer.ggml.seperator_token_id': [GgufValueType.UINT32, 2],
      'tokenizer.ggml.padding_token_id': [GgufValueType.UINT32, golden.tokenizer.special_ids['<pad>']],
    };
    for (const [key, [type, value]] of Object.entries(expect)) {
      t.is(r.getKv(key)?.type, type, key);
      t.is(r.get(key), value, key);
    }
    // Vocabulary: HF id order, checked against the tokenizer oracle's ids and pieces.
    const tokens = (r.get('tokenizer.ggml.tokens') as GgufArray).items as string[];
    const types = (r.get('tokenizer.ggml.token_type') as GgufArray).items as Int32Array;
    const scores = (r.get('tokenizer.ggml.scores') as GgufArray);
    t.is(scores.itemType, GgufValueType.FLOAT32);
    t.is((r.get('tokenizer.ggml.token_type') as GgufArray).itemType, GgufValueType.INT32);
    t.is(tokens.length, cfg.vocab_size);
    t.is((scores.items as Float32Array).length, cfg.vocab_size);
    for (const [tok, id] of Object.entries<number>({ ...golden.tokenizer.special_ids, ...golden.tokenizer.madeup_ids })) {
      t.is(tokens[id], tok);
      t.is(types[id], id === 3 ? 2 : 3, tok);
    }
    let checked = 0;
    for (const c of golden.tokenizer.cases) {
      c.ids.slice(1).forEach((id: number, i: number) => {
        if (id === 3 || id === 2 || id === 0 || id === 1 || id >= golden.tokenizer.vocab_size - 7) return;
        t.is(tokens[id], c.pieces[i], `${c.id} piece ${i}`);
        t.is(types[id], 1);
        checked++;
      });
    }
    t.true(checked > 1000);
    const charsmap = r.get('tokenizer.ggml.precompiled_charsmap') as GgufArray;
    t.is(charsmap.itemType, GgufValueType.UINT8);
    t.true((charsmap.items as Uint8Array).length > 4);
  });

  test(`${fixture}: tensor names, shapes and types for every output type`, async (t) => {
    const cfg = configOf(fixture);
    const d = cfg.d_model;
    const expected: Array<[string, number[]]> = [
      ['token_embd.weight', [d, cfg.vocab_size]],
      ['position_embd.weight', [d, cfg.max_position_embeddings]],
    ];
    for (let i = 0; i < cfg.num_layers; i++) {
      expected.push(
        [`blk.${i}.attn_norm.weight`, [d]],
        [`blk.${i}.attn_norm.bias`, [d]],
        [`blk.${i}.attn_qkv.weight`, [d, 3 * d]],
        [`blk.${i}.attn_qkv.bias`, [3 * d]],
        [`blk.${i}.attn_output.weight`, [d, d]],
        [`blk.${i}.attn_output.bias`, [d]],
        [`blk.${i}.ffn_norm.weight`, [d]],
        [`blk.${i}.ffn_norm.bias`, [d]],
        [`blk.${i}.ffn_up.weight`, [d, cfg.ffn_dim]],
        [`blk.${i}.ffn_up.bias`, [cfg.ffn_dim]],
        [`blk.${i}.ffn_down.weight`, [cfg.ffn_dim, d]],
        [`blk.${i}.ffn_down.bias`, [d]],
      );
    }
    expected.push(['output_norm.weight', [d]], ['output_norm.bias', [d]]);
    for (const type of ALL_TYPES) {
      const r = GgufReader.open(await convertOnce(fixture, 'safetensors', type));
      try {
        t.deepEqual(r.tensors.map((x) => [x.name, x.dims]), expected, type);
        t.is(r.get('general.file_type'), OUTPUT_TYPES[type].fileType, type);
        t.is(r.tensor('output.weight'), undefined);
        for (const x of r.tensors) {
          if (x.dims.length === 1 || x.name === 'position_embd.weight') t.is(x.type, GgmlType.F32, `${type} ${x.name}`);
          else if (type === 'f32' || type === 'f16' || type === 'bf16') t.is(x.type, OUTPUT_TYPES[type].baseType, `${type} ${x.name}`);
          else t.true(x.dims[0]! % [32, 256][Number(x.type >= GgmlType.Q2_K && x.type <= GgmlType.Q8_K)]! === 0, `${type} ${x.name}`);
        }
        t.is(r.header.alignment, 32);
        t.is(r.header.dataOffset % 32, 0);
        t.true(r.tensors.every((x) => x.offset % 32 === 0));
      } finally {
        r.close();
      }
    }
  });

  test(`${fixture}: f32 tensor data is the checkpoint's, q/k/v stacked, positions from the sinusoid`, async (t) => {
    const cfg = configOf(fixture);
    const golden = goldenOf(fixture);
    const st = loadSafetensors(path.join(fixtureDir(fixture), 'model.safetensors'));
    const r = GgufReader.open(await convertOnce(fixture, 'pytorch', 'f32'));
    t.teardown(() => r.close());
    const same = (gguf: string, ...hf: string[]) => {
      const want = new Float32Array(hf.reduce((n, h) => n + st.get(h)!.values.length, 0));
      let at = 0;
      for (const h of hf) {
        want.set(st.get(h)!.values, at);
        at += st.get(h)!.values.length;
      }
      t.deepEqual(f32Tensor(r, gguf), want, gguf);
    };
    same('token_embd.weight', 'model.embed_tokens.weight');
    same('output_norm.weight', 'model.layer_norm.weight');
    same('output_norm.bias', 'model.layer_norm.bias');
    for (let i = 0; i < cfg.num_layers; i++) {
      const p = `model.layers.${i}.`;
      same(`blk.${i}.attn_qkv.weight`, `${p}self_attn.q_proj.weight`, `${p}self_attn.k_proj.weight`, `${p}self_attn.v_proj.weight`);
      same(`blk.${i}.attn_qkv.bias`, `${p}self_attn.q_proj.bias`, `${p}self_attn.k_proj.bias`, `${p}self_attn.v_proj.bias`);
      same(`blk.${i}.attn_output.weight`, `${p}self_attn.out_proj.weight`);
      same(`blk.${i}.attn_norm.weight`, `${p}self_attn_layer_norm.weight`);
      same(`blk.${i}.ffn_norm.bias`, `${p}final_layer_norm.bias`);
      same(`blk.${i}.ffn_up.weight`, `${p}fc1.weight`);
      same(`blk.${i}.ffn_down.weight`, `${p}fc2.weight`);
      same(`blk.${i}.ffn_down.bias`, `${p}fc2.bias`);
    }
    // position_embd row t = table row t + 2; compare with PyTorch's float32 table. Sine and cosine
    // implementations differ by an ulp, and an ulp of the argument p·freq is ~p·6e-8.
    const pos = f32Tensor(r, 'position_embd.weight');
    const { rows, values } = golden.sinusoid_check;
    let maxdiff = 0;
    for (let j = 0; j < rows.length; j++) {
      if (rows[j]! < 2) continue;
      const row = pos.subarray((rows[j]! - 2) * cfg.d_model, (rows[j]! - 1) * cfg.d_model);
      const tolerance = 1e-6 + 2 * rows[j]! * 2 ** -23;
      for (let i = 0; i < cfg.d_model; i++) {
        const diff = Math.abs(row[i]! - values[j]![i]!);
        maxdiff = Math.max(maxdiff, diff);
        if (diff > tolerance) t.fail(`row ${rows[j]} col ${i}: ${row[i]} vs ${values[j]![i]}`);
      }
    }
    t.true(rows.includes(cfg.max_position_embeddings + 1), 'the golden check includes the last row');
    t.log(`position_embd vs PyTorch: maxdiff ${maxdiff.toExponential(2)}`);
  });

  test(`${fixture}: q8_0 blocks decode to the f32 weights within half a step`, async (t) => {
    const r32 = GgufReader.open(await convertOnce(fixture, 'safetensors', 'f32'));
    const r8 = GgufReader.open(await convertOnce(fixture, 'safetensors', 'q8_0'));
    t.teardown(() => (r32.close(), r8.close()));
    // the tied embedding stays F16 in q8_0 files (docs/converting.md)
    t.is(r8.tensor('token_embd.weight')!.type, GgmlType.F16);
    for (const name of ['blk.0.attn_qkv.weight', 'blk.1.ffn_down.weight']) {
      t.is(r8.tensor(name)!.type, GgmlType.Q8_0);
      const want = f32Tensor(r32, name);
      const q = r8.readTensorBytes(r8.tensor(name)!);
      let worst = 0;
      for (let b = 0; b < want.length / 32; b++) {
        const d = halfToFloat(q.readUInt16LE(34 * b));
        for (let i = 0; i < 32; i++) {
          const x = d * q.readInt8(34 * b + 2 + i);
          worst = Math.max(worst, Math.abs(x - want[32 * b + i]!) / Math.max(d, 1e-30));
        }
      }
      // Values are rounded with the float32 scale; the stored scale is float16 (relative error
      // ≤ 2^-11), which moves the largest value (127 steps) by up to 127·2^-11 more.
      t.true(worst <= 0.5 + 127 * 2 ** -11, `${name}: worst error ${worst} steps`);
    }
  });
}

test('k-quant mixes: tied embedding gets more bits, qkv one step more, ffn_down per layer; fallbacks as llama.cpp', async (t) => {
  const out = path.join(tmpDir(t), 'a.gguf');
  const warnings: string[] = [];
  const result = await convert(fixtureDir('tiny-a'), out, { type: 'q4_k_m', onWarning: (w) => warnings.push(w) });
  // d_model 64 fits 32-blocks only: Q4_K → Q5_0, Q5_K (qkv) → Q5_1; ffn_down rows of 256 keep k-quants.
  t.deepEqual(
    result.tensors.filter((x) => x.dims.length === 2).map((x) => `${x.name}:${ggmlTypeName(x.type)}`),
    [
      'token_embd.weight:q8_0',
      'position_embd.weight:f32',
      'blk.0.attn_qkv.weight:q5_1',
      'blk.0.attn_output.weight:q5_0',
      'blk.0.ffn_up.weight:q5_0',
      'blk.0.ffn_down.weight:q4_K',
      'blk.1.attn_qkv.weight:q5_1',
      'blk.1.attn_output.weight:q5_0',
      'blk.1.ffn_up.weight:q5_0',
      'blk.1.ffn_down.weight:q6_K',
    ],
  );
  t.deepEqual(result.fallbacks.map((f) => `${f.tensor}:${f.wanted}->${f.used}`), [
    'blk.0.attn_qkv.weight:q5_K->q5_1',
    'blk.0.attn_output.weight:q4_K->q5_0',
    'blk.0.ffn_up.weight:q4_K->q5_0',
    'blk.1.attn_qkv.weight:q5_K->q5_1',
    'blk.1.attn_output.weight:q4_K->q5_0',
    'blk.1.ffn_up.weight:q4_K->q5_0',
  ]);
  t.is(warnings.length, 6);
  t.regex(warnings[0]!, /rows of 64 do not fit q5_K blocks; using q5_1/);
});

test('quantize() from an f32 GGUF equals converting directly; from f16 of an f16 checkpoint too', async (t) => {
  const dir = tmpDir(t);
  for (const type of ['q4_k_m', 'q8_0', 'f16'] as const) {
    const out = path.join(dir, `a-${type}.gguf`);
    const result = await quantize(await convertOnce('tiny-a', 'safetensors', 'f32'), out, type);
    t.is(result.fileType, OUTPUT_TYPES[type].fileType);
    t.true(fs.readFileSync(out).equals(fs.readFileSync(await convertOnce('tiny-a', 'safetensors', type))), type);
  }
  // tiny-b's weights are float16: going through an f16 GGUF loses nothing.
  const out = path.join(dir, 'b-q5_k_m.gguf');
  await quantize(await convertOnce('tiny-b', 'safetensors', 'f16'), out, 'q5_k_m');
  t.true(fs.readFileSync(out).equals(fs.readFileSync(await convertOnce('tiny-b', 'safetensors', 'q5_k_m'))));
  await t.throwsAsync(quantize(await convertOnce('tiny-a', 'safetensors', 'q4_0'), path.join(dir, 'x.gguf'), 'q8_0'), { code: 'ERR_XGLM_UNSUPPORTED' } as never);
  t.false(fs.existsSync(path.join(dir, 'x.gguf')));
});

test('progress reports bytes and tensors up to the file size', async (t) => {
  const events: Array<{ tensorsDone: number; bytesWritten: number; bytesTotal: number }> = [];
  const out = path.join(tmpDir(t), 'p.gguf');
  const result = await convert(fixtureDir('tiny-b'), out, { type: 'q8_0', onProgress: (e) => events.push(e) });
  const last = events[events.length - 1]!;
  t.is(last.tensorsDone, result.tensors.length);
  t.is(last.bytesWritten, fs.statSync(out).size);
  t.is(last.bytesTotal, fs.statSync(out).size);
  for (let i = 1; i < events.length; i++) t.true(events[i]!.bytesWritten >= events[i - 1]!.bytesWritten);
  t.deepEqual(result.ignored, []);
  const bin = await convert(fixtureDir('tiny-b'), path.join(tmpDir(t), 'q.gguf'), { type: 'f16', weights: 'pytorch' });
  t.deepEqual(bin.ignored, ['lm_head.weight']);
});

test('a folder with tokenizer.json instead of sentencepiece.bpe.model converts to the same file', async (t) => {
  const dir = tmpDir(t);
  for (const fixture of FIXTURE_NAMES) {
    const ckpt = path.join(dir, fixture);
    fs.mkdirSync(ckpt);
    for (const f of ['config.json', 'model.safetensors']) fs.copyFileSync(path.join(fixtureDir(fixture), f), path.join(ckpt, f));
    // tokenizer.json as transformers' XGLM converter lays it out (test helper).
    const json = tokenizerJsonFromSentencePiece(fs.readFileSync(path.join(fixtureDir(fixture), 'sentencepiece.bpe.model')));
    fs.writeFileSync(path.join(ckpt, 'tokenizer.json'), JSON.stringify(json));
    const out = path.join(dir, `${fixture}.gguf`);
    await convert(ckpt, out, { type: 'q8_0', name: fixture });
    t.true(fs.readFileSync(out).equals(fs.readFileSync(await convertOnce(fixture, 'safetensors', 'q8_0'))), fixture);
  }
});

// Every output type through ggml's loader and the engine, over every prompt of both fixtures:
// - f32 within 1e-4 of PyTorch and f16 within 1e-2 (engine.test.ts's tolerances) at every
//   prompt's last position;
// - every other type (the quantized ones and bf16) against its dequantized twin (the same file,
//   decoded to F32 by ggml: test/helpers/dequantized-twin.ts) within the tolerance derived from
//   its products' activation rounding (twinTolerance, calibrated by the f16 file against its
//   twin), and its top-1 where the twin's margin is clear (compareToTwin);
// - the orderings against PyTorch that follow from the weights alone, the twins having shown the
//   kernels add only activation rounding: 8 bits closer than 4 (q8_0 < q4_0, q8_0 < q4_k_m),
//   and one more bit in the same block structure closer (q5_0 < q4_0: 32-blocks with a scale;
//   q5_k_m < q4_k_m: the same mix one k-quant step finer). Types of different structures (q6_k
//   against q5_0, bf16 against q8_0 …) are not ordered: nothing makes that principled.
test('every output type loads in the engine (ggml gguf.cpp) and its logits track PyTorch', async (t) => {
  const { allLogits, assertMatchesTwin, calibrateF16 } = await import('./helpers/dequantized-twin.js');
  for (const fixture of FIXTURE_NAMES) {
    const prompts = goldenOf(fixture).prompts;
    const reference = prompts.map((p) => {
      const ref = fs.readFileSync(path.join(fixtureDir(fixture), p.last_logits.file));
      return new Float32Array(ref.buffer.slice(ref.byteOffset, ref.byteOffset + ref.length));
    });
    const rel: Partial<Record<OutputTypeName, number>> = {};
    const logits: Partial<Record<OutputTypeName, Float32Array[][]>> = {};
    for (const type of ALL_TYPES) {
      const rows = await allLogits(await convertOnce(fixture, 'safetensors', type), prompts);
      logits[type] = rows;
      t.true(rows.every((r) => r.every((row) => row.every(Number.isFinite))), `${fixture} ${type}`);
      // max over the prompts' last rows of max |diff| / max |PyTorch logit|
      rel[type] = Math.max(
        ...rows.map((r, i) => {
          const got = r[r.length - 1]!;
          const want = reference[i]!;
          const scale = want.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
          return got.reduce((m, x, k) => Math.max(m, Math.abs(x - want[k]!)), 0) / scale;
        }),
      );
    }
    t.log(`${fixture} last-token logits, max |diff| / max |logit| vs PyTorch: ${ALL_TYPES.map((x) => `${x} ${rel[x]!.toExponential(1)}`).join(', ')}`);
    t.true(rel.f32! < 1e-4, `${fixture} f32`);
    t.true(rel.f16! < 1e-2, `${fixture} f16`);

    const cal = await calibrateF16(await convertOnce(fixture, 'safetensors', 'f16'), prompts, logits.f16);
    t.log(`${fixture} calibration: f16 vs its F32 twin, last rows max rel ${cal.lastRel.toExponential(2)}`);
    let checked = 0;
    for (const type of ALL_TYPES.filter((x) => x !== 'f32' && x !== 'f16')) {
      checked += await assertMatchesTwin(t, `${fixture} ${type}`, await convertOnce(fixture, 'safetensors', type), prompts, cal.lastRel, logits[type]);
    }
    t.true(checked >= ALL_TYPES.length - 2, `${fixture}: top-1 checked at ${checked} rows only`);

    t.true(rel.q8_0! < rel.q4_0!, `${fixture} q8_0 < q4_0`);
    t.true(rel.q8_0! < rel.q4_k_m!, `${fixture} q8_0 < q4_k_m`);
    t.true(rel.q5_0! < rel.q4_0!, `${fixture} q5_0 < q4_0`);
    t.true(rel.q5_k_m! < rel.q4_k_m!, `${fixture} q5_k_m < q4_k_m`);
  }
});

test('an AbortSignal stops the conversion and leaves no file', async (t) => {
  const dir = tmpDir(t);
  const out = path.join(dir, 'aborted.gguf');
  const controller = new AbortController();
  let events = 0;
  const err = await t.throwsAsync(
    convert(fixtureDir('tiny-b'), out, {
      type: 'q8_0',
      signal: controller.signal,
      onProgress: () => {
        if (++events === 3) controller.abort();
      },
    }),
    { code: 'ERR_XGLM_ABORTED' } as never,
  );
  t.regex(err?.message ?? '', /aborted/);
  t.is(events, 3);
  t.deepEqual(fs.readdirSync(dir), []);
  await t.throwsAsync(quantize(await convertOnce('tiny-a', 'safetensors', 'f32'), out, 'q8_0', { signal: AbortSignal.abort() }), { code: 'ERR_XGLM_ABORTED' } as never);
  t.deepEqual(fs.readdirSync(dir), []);
});

/**
 * GGUF files made from the test fixtures (test/fixtures/tiny-a, tiny-b), and the fixtures'
 * golden outputs, for the engine tests.
 *
 * The project's converter (src/convert) makes the files. Until it exists, a minimal
 * safetensors → GGUF step below writes the DESIGN.md §4 tensors (no tokenizer, no position
 * table: the engine computes it) with ggml's own quantizer for q8_0/q4_0.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { GgmlType, GgufWriter, kv, type GgufKv, type GgufTensorSpec } from '../../src/gguf/index.js';
import { native } from '../../src/native.js';

export const FIXTURES = path.join(__dirname, '..', 'fixtures');
export type FixtureName = 'tiny-a' | 'tiny-b';
export const FIXTURE_NAMES: FixtureName[] = ['tiny-a', 'tiny-b'];
export type FixtureType = 'f32' | 'f16' | 'q8_0' | 'q4_0';

export interface GoldenPrompt {
  id: string;
  text: string;
  ids: number[];
  n_tokens: number;
  last_logits: { file: string; shape: number[]; argmax: number; max: number };
  all_logits?: { file: string; shape: number[] };
  hidden_states?: { file: string; shape: number[] };
  top5: Array<{ pos: number; ids: number[]; logprobs: number[] }>;
  greedy: { n_new: number; ids: number[]; logprobs: number[]; top1_top2_logit_margins: number[]; min_top1_top2_logit_margin: number };
}

export interface Golden {
  model: { config: { d_model: number; num_layers: number; vocab_size: number; max_position_embeddings: number } };
  prompts: GoldenPrompt[];
  left_padding: {
    input_ids: number[][];
    attention_mask: number[][];
    last_top5: Array<{ ids: number[]; logprobs: number[] }>;
  };
}

export function golden(name: FixtureName): Golden {
  return JSON.parse(fs.readFileSync(path.join(FIXTURES, name, 'golden.json'), 'utf8')) as Golden;
}

export function readF32(name: FixtureName, file: string): Float32Array {
  const buf = fs.readFileSync(path.join(FIXTURES, name, file));
  return new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
}

/** max |a - b| over the arrays and max |b|: the fixtures' tolerances are relative to it. */
export function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): { diff: number; scale: number } {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return { diff, scale };
}

export function argmax(a: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i]! > a[best]!) best = i;
  return best;
}

const cache = new Map<string, Promise<string>>();
let tmpDir: string | undefined;

/** A GGUF of a fixture model in the given type, made once per test process. */
export function fixtureGguf(name: FixtureName, type: FixtureType): Promise<string> {
  const key = `${name}-${type}`;
  let file = cache.get(key);
  if (!file) {
    tmpDir ??= fs.mkdtempSync(path.join(os.tmpdir(), 'xglm-engine-'));
    file = makeGguf(path.join(FIXTURES, name), path.join(tmpDir, `${key}.gguf`), type);
    cache.set(key, file);
  }
  return file;
}

type Converter = (src: string, out: string, options: { type: string }) => Promise<unknown>;

function projectConverter(): Converter | undefined {
  const entry = path.join(__dirname, '..', '..', 'src', 'convert', 'index.ts');
  if (!fs.existsSync(entry)) return undefined;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const mod = require(entry) as { convert?: Converter };
  return mod.convert;
}

async function makeGguf(src: string, out: string, type: FixtureType): Promise<string> {
  const convert = process.env.XGLM_TEST_OWN_GGUF ? undefined : projectConverter();
  if (convert) {
    await convert(src, out, { type });
  } else {
    await writeMinimalGguf(src, out, type);
  }
  return out;
}

// ---- the stop-gap converter -------------------------------------------------------------

interface StEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

function readSafetensors(file: string): Map<string, { shape: number[]; data: Float32Array }> {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, StEntry>;
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, e] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const bytes = buf.subarray(8 + n + e.data_offsets[0], 8 + n + e.data_offsets[1]);
    let data: Float32Array;
    if (e.dtype === 'F32') {
      data = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    } else if (e.dtype === 'F16') {
      const h = new Uint16Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
      data = Float32Array.from(h, halfToFloat);
    } else {
      throw new Error(`${name}: dtype ${e.dtype} not handled by the test helper`);
    }
    out.set(name, { shape: e.shape, data });
  }
  return out;
}

function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

function floatToHalf(f: number): number {
  const view = new DataView(new ArrayBuffer(4));
  view.setFloat32(0, f);
  const x = view.getUint32(0);
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  e = half;
  return sign | e;
}

async function encode(data: Float32Array, dims: number[], type: FixtureType): Promise<{ type: number; bytes: Uint8Array }> {
  if (dims.length === 1 || type === 'f32') return { type: GgmlType.F32, bytes: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
  if (type === 'f16') {
    const h = Uint16Array.from(data, floatToHalf);
    return { type: GgmlType.F16, bytes: new Uint8Array(h.buffer) };
  }
  const ggmlType = type === 'q8_0' ? GgmlType.Q8_0 : GgmlType.Q4_0;
  const rows = dims[1]!;
  const dst = new Uint8Array(native().rowSize(ggmlType, dims[0]!) * rows);
  await native().quantizeRows(ggmlType, data, dst, rows, dims[0]!, 2);
  return { type: ggmlType, bytes: dst };
}

async function writeMinimalGguf(src: string, out: string, type: FixtureType): Promise<void> {
  const config = JSON.parse(fs.readFileSync(path.join(src, 'config.json'), 'utf8')) as Record<string, number | boolean>;
  const st = readSafetensors(path.join(src, 'model.safetensors'));
  const get = (n: string) => {
    const t = st.get(n);
    if (!t) throw new Error(`missing ${n}`);
    return t.data;
  };
  const nEmbd = config.d_model as number;
  const nLayer = config.num_layers as number;
  const tensors: Array<{ name: string; dims: number[]; data: Float32Array }> = [];
  const add = (name: string, dims: number[], data: Float32Array) => tensors.push({ name, dims, data });
  const concat = (...parts: Float32Array[]) => {
    const outArr = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
    let o = 0;
    for (const p of parts) {
      outArr.set(p, o);
      o += p.length;
    }
    return outArr;
  };
  add('token_embd.weight', [nEmbd, config.vocab_size as number], get('model.embed_tokens.weight'));
  for (let i = 0; i < nLayer; i++) {
    const h = `model.layers.${i}.`;
    const b = `blk.${i}.`;
    add(`${b}attn_norm.weight`, [nEmbd], get(`${h}self_attn_layer_norm.weight`));
    add(`${b}attn_norm.bias`, [nEmbd], get(`${h}self_attn_layer_norm.bias`));
    add(`${b}attn_qkv.weight`, [nEmbd, 3 * nEmbd], concat(get(`${h}self_attn.q_proj.weight`), get(`${h}self_attn.k_proj.weight`), get(`${h}self_attn.v_proj.weight`)));
    add(`${b}attn_qkv.bias`, [3 * nEmbd], concat(get(`${h}self_attn.q_proj.bias`), get(`${h}self_attn.k_proj.bias`), get(`${h}self_attn.v_proj.bias`)));
    add(`${b}attn_output.weight`, [nEmbd, nEmbd], get(`${h}self_attn.out_proj.weight`));
    add(`${b}attn_output.bias`, [nEmbd], get(`${h}self_attn.out_proj.bias`));
    add(`${b}ffn_norm.weight`, [nEmbd], get(`${h}final_layer_norm.weight`));
    add(`${b}ffn_norm.bias`, [nEmbd], get(`${h}final_layer_norm.bias`));
    add(`${b}ffn_up.weight`, [nEmbd, config.ffn_dim as number], get(`${h}fc1.weight`));
    add(`${b}ffn_up.bias`, [config.ffn_dim as number], get(`${h}fc1.bias`));
    add(`${b}ffn_down.weight`, [config.ffn_dim as number, nEmbd], get(`${h}fc2.weight`));
    add(`${b}ffn_down.bias`, [nEmbd], get(`${h}fc2.bias`));
  }
  add('output_norm.weight', [nEmbd], get('model.layer_norm.weight'));
  add('output_norm.bias', [nEmbd], get('model.layer_norm.bias'));

  const encoded = await Promise.all(tensors.map((t) => encode(t.data, t.dims, type)));
  const kvs: GgufKv[] = [
    kv.str('general.architecture', 'xglm'),
    kv.str('general.name', path.basename(src)),
    kv.u32('general.quantization_version', 2),
    kv.u32('xglm.context_length', config.max_position_embeddings as number),
    kv.u32('xglm.embedding_length', nEmbd),
    kv.u32('xglm.feed_forward_length', config.ffn_dim as number),
    kv.u32('xglm.block_count', nLayer),
    kv.u32('xglm.attention.head_count', config.attention_heads as number),
    kv.u32('xglm.attention.head_count_kv', config.attention_heads as number),
    kv.f32('xglm.attention.layer_norm_epsilon', 1e-5),
    kv.f32('xglm.embedding_scale', config.scale_embedding ? Math.sqrt(nEmbd) : 1),
  ];
  const specs: GgufTensorSpec[] = tensors.map((t, i) => ({ name: t.name, dims: t.dims, type: encoded[i]!.type }));
  const w = await GgufWriter.create(out, kvs, specs);
  for (const e of encoded) await w.write(e.bytes);
  await w.finish();
}

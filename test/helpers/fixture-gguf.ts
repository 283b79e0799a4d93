/**
 * GGUF files made from the test fixtures (test/fixtures/tiny-a, tiny-b), and the fixtures'
 * golden outputs, for the engine tests.
 *
 * The project's converter (src/convert) makes the files. Until it exists, a minimal
 * safetensors → GGUF step below writes the tensors of docs/converting.md's layout (no tokenizer, no position
 * table: the engine computes it) with ggml's own quantizer for q8_0/q4_0.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { GgmlType, GgufWriter, kv, type GgufKv, type GgufTensorSpec } from '../../src/gguf/index.js';
import { native } from '../../src/native.js';
import { halfToFloat } from './half.js';

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

function ensureTmp(): string {
  if (!tmpDir) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xglm-engine-'));
    process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
    tmpDir = dir;
  }
  return tmpDir;
}

/** A GGUF of a fixture model in the given type, made once per test process by the project's converter. */
export function fixtureGguf(name: FixtureName, type: FixtureType): Promise<string> {
  const key = `${name}-${type}`;
  let file = cache.get(key);
  if (!file) {
    file = makeGguf(path.join(FIXTURES, name), path.join(ensureTmp(), `${key}.gguf`), type);
    cache.set(key, file);
  }
  return file;
}

/**
 * A fixture GGUF written by the minimal writer below instead of the converter: without
 * position_embd.weight (the engine then computes the table) and without tokenizer keys.
 */
export async function minimalFixtureGguf(name: FixtureName, type: FixtureType): Promise<string> {
  const out = path.join(ensureTmp(), `${name}-${type}-minimal.gguf`);
  await writeMinimalGguf(path.join(FIXTURES, name), out, type);
  return out;
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

/** XGLM hyperparameters, as in config.json. */
export interface XglmShape {
  d_model: number;
  num_layers: number;
  attention_heads: number;
  ffn_dim: number;
  max_position_embeddings: number;
  vocab_size: number;
}

/** The GGUF tensors of an XGLM model: name, ggml dims and where the values come from. */
function tensorPlan(shape: XglmShape): Array<{ name: string; dims: number[]; hf: string[] }> {
  const { d_model: d, ffn_dim: ff, vocab_size: V } = shape;
  const plan = [{ name: 'token_embd.weight', dims: [d, V], hf: ['model.embed_tokens.weight'] }];
  for (let i = 0; i < shape.num_layers; i++) {
    const h = `model.layers.${i}.`;
    const b = `blk.${i}.`;
    plan.push(
      { name: `${b}attn_norm.weight`, dims: [d], hf: [`${h}self_attn_layer_norm.weight`] },
      { name: `${b}attn_norm.bias`, dims: [d], hf: [`${h}self_attn_layer_norm.bias`] },
      { name: `${b}attn_qkv.weight`, dims: [d, 3 * d], hf: ['q', 'k', 'v'].map((x) => `${h}self_attn.${x}_proj.weight`) },
      { name: `${b}attn_qkv.bias`, dims: [3 * d], hf: ['q', 'k', 'v'].map((x) => `${h}self_attn.${x}_proj.bias`) },
      { name: `${b}attn_output.weight`, dims: [d, d], hf: [`${h}self_attn.out_proj.weight`] },
      { name: `${b}attn_output.bias`, dims: [d], hf: [`${h}self_attn.out_proj.bias`] },
      { name: `${b}ffn_norm.weight`, dims: [d], hf: [`${h}final_layer_norm.weight`] },
      { name: `${b}ffn_norm.bias`, dims: [d], hf: [`${h}final_layer_norm.bias`] },
      { name: `${b}ffn_up.weight`, dims: [d, ff], hf: [`${h}fc1.weight`] },
      { name: `${b}ffn_up.bias`, dims: [ff], hf: [`${h}fc1.bias`] },
      { name: `${b}ffn_down.weight`, dims: [ff, d], hf: [`${h}fc2.weight`] },
      { name: `${b}ffn_down.bias`, dims: [d], hf: [`${h}fc2.bias`] },
    );
  }
  plan.push({ name: 'output_norm.weight', dims: [d], hf: ['model.layer_norm.weight'] });
  plan.push({ name: 'output_norm.bias', dims: [d], hf: ['model.layer_norm.bias'] });
  return plan;
}

/** Writes tensor by tensor, asking `values` for each one's float32 data. */
async function writeXglmGguf(out: string, shape: XglmShape, name: string, type: FixtureType, values: (t: { name: string; dims: number[]; hf: string[] }) => Float32Array): Promise<void> {
  const plan = tensorPlan(shape);
  const typeOf = (dims: number[]) => (dims.length === 1 || type === 'f32' ? GgmlType.F32 : type === 'f16' ? GgmlType.F16 : type === 'q8_0' ? GgmlType.Q8_0 : GgmlType.Q4_0);
  const d = shape.d_model;
  const kvs: GgufKv[] = [
    kv.str('general.architecture', 'xglm'),
    kv.str('general.name', name),
    kv.u32('general.quantization_version', 2),
    kv.u32('xglm.context_length', shape.max_position_embeddings),
    kv.u32('xglm.embedding_length', d),
    kv.u32('xglm.feed_forward_length', shape.ffn_dim),
    kv.u32('xglm.block_count', shape.num_layers),
    kv.u32('xglm.attention.head_count', shape.attention_heads),
    kv.u32('xglm.attention.head_count_kv', shape.attention_heads),
    kv.f32('xglm.attention.layer_norm_epsilon', 1e-5),
    kv.f32('xglm.embedding_scale', Math.sqrt(d)),
  ];
  const specs: GgufTensorSpec[] = plan.map((t) => ({ name: t.name, dims: t.dims, type: typeOf(t.dims) }));
  const w = await GgufWriter.create(out, kvs, specs);
  try {
    for (const t of plan) await w.write((await encode(values(t), t.dims, type)).bytes);
    await w.finish();
  } catch (err) {
    await w.abort();
    throw err;
  }
}

async function writeMinimalGguf(src: string, out: string, type: FixtureType): Promise<void> {
  const config = JSON.parse(fs.readFileSync(path.join(src, 'config.json'), 'utf8')) as XglmShape & { scale_embedding: boolean };
  if (!config.scale_embedding) throw new Error('the test helper writes scaled embeddings only');
  const st = readSafetensors(path.join(src, 'model.safetensors'));
  await writeXglmGguf(out, config, path.basename(src), type, (t) => {
    const parts = t.hf.map((n) => {
      const x = st.get(n);
      if (!x) throw new Error(`missing ${n}`);
      return x.data;
    });
    if (parts.length === 1) return parts[0]!;
    const all = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
    let o = 0;
    for (const p of parts) {
      all.set(p, o);
      o += p.length;
    }
    return all;
  });
}

/**
 * A random-weight XGLM of any shape (normal(0, 0.02) matrices, unit norms, zero biases):
 * for shape-dependent tests (long contexts, the 564M layout) where no checkpoint is needed.
 */
export async function randomGguf(out: string, shape: XglmShape, type: FixtureType, seed = 1): Promise<string> {
  let state = seed >>> 0 || 1;
  const uniform = () => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return (state + 0.5) / 2 ** 32;
  };
  await writeXglmGguf(out, shape, 'random', type, (t) => {
    const n = t.dims.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    if (t.dims.length === 1) {
      if (t.name.endsWith('norm.weight')) data.fill(1);
      return data;
    }
    for (let i = 0; i < n; i += 2) {
      // Box–Muller
      const r = Math.sqrt(-2 * Math.log(uniform())) * 0.02;
      const a = 2 * Math.PI * uniform();
      data[i] = r * Math.cos(a);
      if (i + 1 < n) data[i + 1] = r * Math.sin(a);
    }
    return data;
  });
  return out;
}

/** A per-process temporary file path for generated models. */
export function tmpPath(file: string): string {
  return path.join(ensureTmp(), file);
}

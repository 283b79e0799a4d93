/**
 * Seeded random-weight HuggingFace XGLM checkpoints of any shape (the real 564M one included),
 * for tests of shapes and sizes and for benchmarks: config.json, a sentencepiece.bpe.model with
 * exactly vocab_size − 8 pieces, and model.safetensors and/or a torch.save-style pytorch_model.bin.
 *
 * Tensors are generated and written chunk by chunk, each from its own seed (derived from the
 * checkpoint seed and the tensor name), so a 2.3 GB checkpoint never sits in memory and the
 * bytes do not depend on the order of generation.
 */
import fs from 'node:fs';
import path from 'node:path';
import { XglmError } from '../errors.js';
import { packageRoot } from '../paths.js';
import { writeTorchStateDict } from './torch-save.js';

export interface XglmShape {
  dModel: number;
  nLayers: number;
  nHeads: number;
  ffnDim: number;
  vocabSize: number;
  maxPositions: number;
}

/** facebook/xglm-564M. */
export const XGLM_564M_SHAPE: XglmShape = { dModel: 1024, nLayers: 24, nHeads: 16, ffnDim: 4096, vocabSize: 256008, maxPositions: 2048 };

export interface RandomCheckpointOptions extends XglmShape {
  /** @default 1 */
  seed?: number;
  /** @default 'F32' */
  dtype?: 'F32' | 'F16' | 'BF16';
  /** Standard deviation of matrix entries (uniform distribution). @default 0.02 */
  std?: number;
  /**
   * SentencePiece model whose normalizer and first pieces are reused; pieces are cut or padded
   * with synthetic ones to vocabSize − 8.
   * @default test/fixtures/tiny-a/sentencepiece.bpe.model of this package
   */
  baseSpmModel?: string;
  /** Weights files to write (same values in each). @default ['safetensors'] */
  formats?: Array<'safetensors' | 'pytorch'>;
}

/** mulberry32: small, fast, good enough for test weights. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** FNV-1a of the name mixed with the seed: one independent stream per tensor. */
function tensorSeed(seed: number, name: string): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** Round-to-nearest-even float32 → binary16 bits. */
export function floatToHalf(value: number): number {
  const f = new Float32Array([value]);
  const x = new Uint32Array(f.buffer)[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    let half = m >>> shift;
    const rest = m & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rest > mid || (rest === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && half & 1)) half++;
  return sign | half;
}

/** float32 → bfloat16 bits, round to nearest even. */
function floatToBf16(value: number): number {
  const x = new Uint32Array(new Float32Array([value]).buffer)[0]!;
  if ((x & 0x7fffffff) > 0x7f800000) return (x >>> 16) | 0x40;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

interface TensorDesc {
  name: string;
  shape: number[];
  /** How entries are drawn: matrices ±std·√3, norm weights 1 ± 0.1, biases ±0.02. */
  kind: 'matrix' | 'norm' | 'bias';
}

function xglmTensors(s: XglmShape): TensorDesc[] {
  const out: TensorDesc[] = [{ name: 'model.embed_tokens.weight', shape: [s.vocabSize, s.dModel], kind: 'matrix' }];
  for (let i = 0; i < s.nLayers; i++) {
    const p = `model.layers.${i}.`;
    for (const proj of ['k_proj', 'v_proj', 'q_proj', 'out_proj']) {
      out.push({ name: `${p}self_attn.${proj}.weight`, shape: [s.dModel, s.dModel], kind: 'matrix' });
      out.push({ name: `${p}self_attn.${proj}.bias`, shape: [s.dModel], kind: 'bias' });
    }
    out.push({ name: `${p}self_attn_layer_norm.weight`, shape: [s.dModel], kind: 'norm' });
    out.push({ name: `${p}self_attn_layer_norm.bias`, shape: [s.dModel], kind: 'bias' });
    out.push({ name: `${p}fc1.weight`, shape: [s.ffnDim, s.dModel], kind: 'matrix' });
    out.push({ name: `${p}fc1.bias`, shape: [s.ffnDim], kind: 'bias' });
    out.push({ name: `${p}fc2.weight`, shape: [s.dModel, s.ffnDim], kind: 'matrix' });
    out.push({ name: `${p}fc2.bias`, shape: [s.dModel], kind: 'bias' });
    out.push({ name: `${p}final_layer_norm.weight`, shape: [s.dModel], kind: 'norm' });
    out.push({ name: `${p}final_layer_norm.bias`, shape: [s.dModel], kind: 'bias' });
  }
  out.push({ name: 'model.layer_norm.weight', shape: [s.dModel], kind: 'norm' });
  out.push({ name: 'model.layer_norm.bias', shape: [s.dModel], kind: 'bias' });
  return out;
}

function checkShape(s: XglmShape): void {
  const ok = (v: number, min: number) => Number.isInteger(v) && v >= min && v <= 1 << 24;
  if (!ok(s.dModel, 2) || s.dModel % 2 || !ok(s.nLayers, 1) || !ok(s.nHeads, 1) || s.dModel % s.nHeads || !ok(s.ffnDim, 1) || !ok(s.vocabSize, 12) || !ok(s.maxPositions, 1)) {
    throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `invalid XGLM shape ${JSON.stringify(s)}`, {
      hint: 'd_model must be even and divisible by the head count; vocabSize ≥ 12',
    });
  }
}

// --- protobuf wire helpers for the .model file ---

function varint(n: number): number[] {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n % 128) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}

/** Top-level fields of a protobuf message, as [field number, raw bytes of the whole field]. */
function topLevelFields(bytes: Uint8Array): Array<[number, Uint8Array]> {
  const fields: Array<[number, Uint8Array]> = [];
  let p = 0;
  const readVarint = (): number => {
    let v = 0;
    let m = 1;
    for (;;) {
      if (p >= bytes.length) throw new XglmError('ERR_XGLM_TOKENIZER', 'base SentencePiece model is truncated');
      const b = bytes[p++]!;
      v += (b & 0x7f) * m;
      if (!(b & 0x80)) return v;
      m *= 128;
    }
  };
  while (p < bytes.length) {
    const start = p;
    const key = readVarint();
    const wire = key & 7;
    if (wire === 0) readVarint();
    else if (wire === 1) p += 8;
    else if (wire === 2) {
      const length = readVarint(); // before touching p: readVarint moves it
      p += length;
    }
    else if (wire === 5) p += 4;
    else throw new XglmError('ERR_XGLM_TOKENIZER', `base SentencePiece model has wire type ${wire}`);
    fields.push([Math.floor(key / 8), bytes.subarray(start, p)]);
  }
  return fields;
}

function pieceField(piece: string, score: number): Uint8Array {
  const text = Buffer.from(piece, 'utf8');
  const scoreBytes = Buffer.alloc(4);
  scoreBytes.writeFloatLE(score);
  const body = [0x0a, ...varint(text.length), ...text, 0x15, ...scoreBytes];
  return Uint8Array.from([0x0a, ...varint(body.length), ...body]);
}

/** A ModelProto with exactly `pieceCount` pieces: the base's first ones, then synthetic ones. */
export function resizeSentencePieceModel(base: Uint8Array, pieceCount: number): Buffer {
  const fields = topLevelFields(base);
  const pieces = fields.filter(([f]) => f === 1).map(([, b]) => b);
  if (pieces.length < 4) throw new XglmError('ERR_XGLM_TOKENIZER', 'base SentencePiece model has fewer than 4 pieces');
  const kept = pieces.slice(0, Math.min(pieceCount, pieces.length));
  const extra: Uint8Array[] = [];
  for (let k = 0; kept.length + extra.length < pieceCount; k++) {
    // "▁" + private-use characters cannot collide with pieces a normal model learned.
    extra.push(pieceField(`▁\u{E000}${k.toString(36)}`, -20 - k * 1e-4));
  }
  const rest = fields.filter(([f]) => f !== 1).map(([, b]) => b);
  return Buffer.concat([...kept, ...extra, ...rest]);
}

function configJson(s: XglmShape, dtype: string, seed: number): string {
  const config = {
    _name_or_path: `random-xglm-d${s.dModel}-l${s.nLayers}-v${s.vocabSize}-seed${seed}`,
    activation_dropout: 0.0,
    activation_function: 'gelu',
    architectures: ['XGLMForCausalLM'],
    attention_dropout: 0.1,
    attention_heads: s.nHeads,
    bos_token_id: 0,
    d_model: s.dModel,
    decoder_start_token_id: 2,
    dropout: 0.1,
    eos_token_id: 2,
    ffn_dim: s.ffnDim,
    init_std: 0.02,
    layerdrop: 0.0,
    max_position_embeddings: s.maxPositions,
    model_type: 'xglm',
    num_layers: s.nLayers,
    pad_token_id: 1,
    scale_embedding: true,
    torch_dtype: { F32: 'float32', F16: 'float16', BF16: 'bfloat16' }[dtype],
    use_cache: true,
    vocab_size: s.vocabSize,
  };
  return `${JSON.stringify(config, null, 2)}\n`;
}

/** Values per generated chunk (4 MiB of float32). */
const GEN_CHUNK = 1 << 20;

/** Streams one tensor's values, encoded as `dtype`, in chunks. */
async function generateTensor(
  t: TensorDesc,
  seed: number,
  std: number,
  dtype: 'F32' | 'F16' | 'BF16',
  write: (bytes: Uint8Array) => Promise<void>,
): Promise<void> {
  const next = rng(tensorSeed(seed, t.name));
  const [center, halfWidth] = t.kind === 'matrix' ? [0, std * Math.sqrt(3)] : t.kind === 'norm' ? [1, 0.1] : [0, 0.02];
  const f32 = new Float32Array(GEN_CHUNK);
  const out16 = new Uint16Array(GEN_CHUNK);
  let remaining = t.shape.reduce((a, b) => a * b, 1);
  while (remaining > 0) {
    const n = Math.min(remaining, GEN_CHUNK);
    for (let i = 0; i < n; i++) f32[i] = center + (2 * next() - 1) * halfWidth;
    if (dtype === 'F32') {
      await write(new Uint8Array(f32.buffer, 0, n * 4));
    } else {
      const encode = dtype === 'F16' ? floatToHalf : floatToBf16;
      for (let i = 0; i < n; i++) out16[i] = encode(f32[i]!);
      await write(new Uint8Array(out16.buffer, 0, n * 2));
    }
    remaining -= n;
  }
}

async function writeSafetensorsFile(file: string, tensors: TensorDesc[], dtype: 'F32' | 'F16' | 'BF16', fill: (t: TensorDesc, write: (b: Uint8Array) => Promise<void>) => Promise<void>): Promise<number> {
  // Tensors in name order, as HF writes them; the JSON header is padded with spaces to 8 bytes.
  const sorted = [...tensors].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const elemBytes = dtype === 'F32' ? 4 : 2;
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let offset = 0;
  for (const t of sorted) {
    const bytes = t.shape.reduce((a, b) => a * b, 1) * elemBytes;
    header[t.name] = { dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let headerText = JSON.stringify(header);
  headerText += ' '.repeat((8 - (Buffer.byteLength(headerText) % 8)) % 8);
  const headerBytes = Buffer.from(headerText, 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(headerBytes.length));

  const handle = await fs.promises.open(`${file}.partial`, 'w');
  try {
    let position = 0;
    const write = async (bytes: Uint8Array) => {
      let done = 0;
      while (done < bytes.length) done += (await handle.write(bytes, done, bytes.length - done, position + done)).bytesWritten;
      position += bytes.length;
    };
    await write(prefix);
    await write(headerBytes);
    for (const t of sorted) await fill(t, write);
    await handle.close();
    await fs.promises.rename(`${file}.partial`, file);
    return position;
  } catch (err) {
    await handle.close().catch(() => undefined);
    await fs.promises.rm(`${file}.partial`, { force: true });
    throw err;
  }
}

/**
 * Writes config.json, sentencepiece.bpe.model and the weights (model.safetensors and/or
 * pytorch_model.bin, with the same values) into `dir` (created if needed).
 * @returns the bytes of each weights file written
 */
export async function writeRandomCheckpoint(
  dir: string,
  options: RandomCheckpointOptions,
): Promise<{ safetensorsBytes?: number; pytorchBytes?: number }> {
  checkShape(options);
  const seed = options.seed ?? 1;
  const dtype = options.dtype ?? 'F32';
  const std = options.std ?? 0.02;
  const formats = options.formats ?? ['safetensors'];
  if (formats.length === 0 || formats.some((f) => f !== 'safetensors' && f !== 'pytorch')) {
    throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `formats must list 'safetensors' and/or 'pytorch'`);
  }
  fs.mkdirSync(dir, { recursive: true });

  const baseFile = options.baseSpmModel ?? path.join(packageRoot, 'test', 'fixtures', 'tiny-a', 'sentencepiece.bpe.model');
  if (!fs.existsSync(baseFile)) {
    throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `no base SentencePiece model at ${baseFile}`, {
      hint: 'pass baseSpmModel (any XGLM sentencepiece.bpe.model); the default exists only in a source checkout',
    });
  }
  const base = fs.readFileSync(baseFile);
  fs.writeFileSync(path.join(dir, 'sentencepiece.bpe.model'), resizeSentencePieceModel(base, options.vocabSize - 8));
  fs.writeFileSync(path.join(dir, 'config.json'), configJson(options, dtype, seed));

  const tensors = xglmTensors(options);
  const fill = (t: TensorDesc, write: (b: Uint8Array) => Promise<void>) => generateTensor(t, seed, std, dtype, write);
  const result: { safetensorsBytes?: number; pytorchBytes?: number } = {};
  if (formats.includes('safetensors')) {
    result.safetensorsBytes = await writeSafetensorsFile(path.join(dir, 'model.safetensors'), tensors, dtype, fill);
  }
  if (formats.includes('pytorch')) {
    // State-dict order (module order), as torch.save writes it.
    result.pytorchBytes = await writeTorchStateDict(
      path.join(dir, 'pytorch_model.bin'),
      tensors.map((t) => ({ name: t.name, shape: t.shape, dtype })),
      (t, write) => fill(tensors.find((x) => x.name === t.name)!, write),
    );
  }
  return result;
}

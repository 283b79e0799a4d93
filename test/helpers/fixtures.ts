/**
 * The test fixtures (test/fixtures/tiny-a, tiny-b: tiny HuggingFace XGLM checkpoints with
 * PyTorch's outputs in golden.json and logits/*.f32), the GGUF files the project's converter
 * (src/convert) makes from them, and the comparisons the tests hold those files' outputs to.
 *
 * Every generated file goes to one temporary folder, created on first use in a test process
 * and removed when the process exits.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { convert, writeRandomCheckpoint, type OutputTypeName, type RandomCheckpointOptions } from '../../src/convert/index.js';
import { GgufReader, GgufWriter, type GgufTensorInfo, type GgufTensorSpec } from '../../src/gguf/index.js';

// ---- the fixtures ---------------------------------------------------------------------------

export const FIXTURES_DIR = path.join(__dirname, '..', 'fixtures');
export const FIXTURE_NAMES = ['tiny-a', 'tiny-b'] as const;
export type FixtureName = (typeof FIXTURE_NAMES)[number];

export function fixtureDir(name: FixtureName): string {
  return path.join(FIXTURES_DIR, name);
}

export function spmModelPath(name: FixtureName): string {
  return path.join(fixtureDir(name), 'sentencepiece.bpe.model');
}

export function readSpmModel(name: FixtureName): Uint8Array {
  return new Uint8Array(fs.readFileSync(spmModelPath(name)));
}

/** A float32 array stored next to golden.json (`file` as golden.json names it, e.g. logits/p0.last.f32). */
export function readF32(name: FixtureName, file: string): Float32Array {
  const buf = fs.readFileSync(path.join(fixtureDir(name), file));
  return new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
}

// ---- golden.json ----------------------------------------------------------------------------

/** A float32 array in a file beside golden.json (read with readF32). */
export interface GoldenArrayFile {
  file: string;
  dtype: 'float32';
  shape: number[];
  sha256: string;
}

export interface GoldenTop5 {
  pos: number;
  ids: number[];
  logprobs: number[];
}

export interface GoldenPrompt {
  id: string;
  text: string;
  ids: number[];
  n_tokens: number;
  last_logits: GoldenArrayFile & { first8: number[]; argmax: number; max: number; min: number };
  /** Only some prompts carry every position's logits and the hidden states. */
  all_logits?: GoldenArrayFile;
  hidden_states?: GoldenArrayFile & { layout: string };
  top5: GoldenTop5[];
  greedy: {
    n_new: number;
    ids: number[];
    logprobs: number[];
    top1_top2_logit_margins: number[];
    min_top1_top2_logit_margin: number;
    eos_index: number | null;
    decoded_new: string;
    decoded_full: string;
  };
  kv_cache: {
    max_abs_diff_token_by_token_vs_full: number;
    max_abs_diff_chunked_prefill_vs_full: number;
    max_abs_diff_cached_greedy_vs_recompute: number;
  };
}

export interface GoldenCopaResult {
  text: string;
  ids: number[];
  n_premise_tokens: number;
  token_logprobs: number[];
  sum_all: number;
  sum_continuation: number;
}

export interface GoldenCopaItem {
  lang: string;
  premise: string;
  choice1: string;
  choice2: string;
  results: GoldenCopaResult[];
  prediction_model_card: number;
  prediction_continuation_only: number;
}

export interface GoldenTokenizerCase {
  id: string;
  lang: string;
  category: string;
  text: string;
  ids: number[];
  pieces: string[];
  decoded: string;
  decoded_spm: string | null;
  n_unk: number;
}

export interface GoldenTokenizer {
  sp_piece_count: number;
  vocab_size: number;
  special_ids: Record<string, number>;
  madeup_ids: Record<string, number>;
  cases: GoldenTokenizerCase[];
}

/** The fields of an XGLM config.json that the tests read (golden.json repeats the fixture's). */
export interface XglmConfig {
  d_model: number;
  num_layers: number;
  attention_heads: number;
  ffn_dim: number;
  max_position_embeddings: number;
  vocab_size: number;
  scale_embedding: boolean;
}

/** A fixture's golden.json: PyTorch's outputs for its checkpoint (format xglm-golden-v1). */
export interface Golden {
  format: string;
  computed_with: string;
  model: {
    config: XglmConfig;
    weights_dtype: string;
    seed: number;
    embed_scale: number;
    layer_norm_eps: number;
    n_parameters: number;
  };
  tokenizer: GoldenTokenizer;
  /** Rows of the sinusoid position table (indexed by position + 2) and their values. */
  sinusoid_check: { rows: number[]; values: number[][]; note: string; max_abs_diff_vs_float64_formula: number };
  prompts: GoldenPrompt[];
  copa: GoldenCopaItem[];
  left_padding: {
    input_ids: number[][];
    attention_mask: number[][];
    position_ids: number[][];
    last_top5: GoldenTop5[];
    max_abs_diff_real_tokens_vs_unpadded: number;
  };
}

/** The fixture's golden.json. */
export function golden(name: FixtureName): Golden {
  return JSON.parse(fs.readFileSync(path.join(fixtureDir(name), 'golden.json'), 'utf8')) as Golden;
}

// ---- comparing outputs ----------------------------------------------------------------------

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

/** max |a - b| relative to max |b| (the fixtures' logits are large, so tolerances scale with them). */
export function relDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const { diff, scale } = maxDiff(a, b);
  return diff / Math.max(scale, 1e-30);
}

export function argmax(a: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i]! > a[best]!) best = i;
  return best;
}

// ---- generated files ------------------------------------------------------------------------

let tmpDir: string | undefined;

/** A path in the process's temporary folder (made on first use, removed at exit). */
export function tmpPath(file: string): string {
  if (!tmpDir) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xglm-test-'));
    process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
    tmpDir = dir;
  }
  return path.join(tmpDir, file);
}

const made = new Map<string, Promise<string>>();

/** Makes `key`'s file once per process. */
function once(key: string, make: () => Promise<string>): Promise<string> {
  let p = made.get(key);
  if (!p) {
    p = make();
    made.set(key, p);
  }
  return p;
}

/** The fixture converted to `type` by the project's converter, once per process. */
export function fixtureGguf(name: FixtureName, type: OutputTypeName = 'f32'): Promise<string> {
  const out = tmpPath(`${name}-${type}.gguf`);
  return once(out, () => convert(fixtureDir(name), out, { type }).then(() => out));
}

/**
 * A random-weight XGLM checkpoint of any shape (src/convert's writeRandomCheckpoint) converted
 * to `type`: for tests that need a shape the fixtures do not have (a long context, k-quant
 * block sizes). The checkpoint and each file are made once per process.
 */
export function randomGguf(options: RandomCheckpointOptions, type: OutputTypeName = 'f32'): Promise<string> {
  const id = Object.entries(options)
    .map(([k, v]) => `${k}${String(v)}`.replace(/[^\w.]+/g, '_'))
    .join('-');
  const dir = tmpPath(`random-${id}`);
  const checkpoint = once(dir, () => writeRandomCheckpoint(dir, options).then(() => dir));
  const out = tmpPath(`random-${id}-${type}.gguf`);
  return once(out, async () => {
    await convert(await checkpoint, out, { type });
    return out;
  });
}

/**
 * A copy of a GGUF file without the named tensors (same metadata, other tensors byte for
 * byte): e.g. a converted fixture without position_embd.weight, which the engine then computes.
 */
export function withoutTensors(file: string, names: readonly string[]): Promise<string> {
  const out = tmpPath(`${path.basename(file, '.gguf')}-without-${names.join('-')}.gguf`);
  return once(out, async () => {
    const dropped: string[] = [];
    await rewriteGguf(file, out, (t) => {
      if (!names.includes(t.name)) return t.type;
      dropped.push(t.name);
      return undefined;
    });
    const missing = names.filter((name) => !dropped.includes(name));
    if (missing.length > 0) throw new Error(`${file} has no tensor ${missing.join(', ')}`);
    return out;
  });
}

/**
 * Writes `out` with the metadata of the GGUF `file` and its tensors in order: each with the
 * type `typeOf` gives it (undefined: left out) and the bytes `data` makes of its own (default:
 * unchanged).
 */
export async function rewriteGguf(
  file: string,
  out: string,
  typeOf: (t: GgufTensorInfo) => number | undefined,
  data: (t: GgufTensorInfo, bytes: Buffer) => Uint8Array = (_, bytes) => bytes,
): Promise<void> {
  const reader = GgufReader.open(file);
  try {
    const kept = reader.tensors.flatMap((t) => {
      const type = typeOf(t);
      return type === undefined ? [] : [{ t, spec: { name: t.name, dims: t.dims, type } satisfies GgufTensorSpec }];
    });
    const w = await GgufWriter.create(out, reader.kv, kept.map((k) => k.spec));
    try {
      for (const { t } of kept) await w.write(data(t, reader.readTensorBytes(t)));
      await w.finish();
    } catch (err) {
      await w.abort();
      throw err;
    }
  } finally {
    reader.close();
  }
}

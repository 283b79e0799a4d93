/**
 * The "dequantized twin" of a GGUF file: the same metadata and tensors, with every tensor of a
 * chosen type decoded to F32 by ggml's own `to_float` (native dequantizeRows). The twin holds
 * the very weights the original file's kernels see, so the original against its twin isolates
 * what the quantized kernels do beyond the weights: ggml's quantized products round the
 * activations too (to Q8_0 blocks of 32 for the 32-block types, to Q8_K blocks of 256 for the
 * k-quants, to BF16 for BF16 weights, to F16 for F16 weights) — and nothing else may differ.
 *
 * Written once per (file, choice) and process with the project's GGUF reader and writer
 * (src/gguf, through fixtures.ts's rewriteGguf), into the tests' temporary folder (tmpPath,
 * removed at exit).
 */
import type { ExecutionContext } from 'ava';
import path from 'node:path';
import { GgmlType, ggmlTypeName } from '../../src/gguf/index.js';
import { native } from '../../src/native.js';
import { argmax, maxDiff, rewriteGguf, tmpPath } from './fixtures.js';

export interface DequantizedTwin {
  file: string;
  /** The tensors that were decoded, with their original ggml type name. */
  decoded: Array<{ name: string; type: string }>;
}

/**
 * Which tensors to decode: by default every type but F32 and F16 (the quantized ones and
 * BF16). F16 stays F16 by default, so a q8_0 file's F16 embedding keeps its F16 product in
 * both files; pass `{ f16: true }` to decode it as well.
 */
export interface TwinOptions {
  f16?: boolean;
}

const made = new Map<string, Promise<DequantizedTwin>>();

export function dequantizedTwin(file: string, options: TwinOptions = {}): Promise<DequantizedTwin> {
  const key = `${file}\0${options.f16 ? 'f16' : ''}`;
  let p = made.get(key);
  if (!p) {
    const out = tmpPath(`twin-${made.size}-${path.basename(file, '.gguf')}.gguf`);
    p = writeTwin(file, out, options);
    made.set(key, p);
  }
  return p;
}

function decodes(type: number, options: TwinOptions): boolean {
  if (type === GgmlType.F32) return false;
  if (type === GgmlType.F16) return options.f16 === true;
  return true;
}

async function writeTwin(file: string, out: string, options: TwinOptions): Promise<DequantizedTwin> {
  const decoded: DequantizedTwin['decoded'] = [];
  await rewriteGguf(
    file,
    out,
    (t) => (decodes(t.type, options) ? GgmlType.F32 : t.type),
    (t, bytes) => {
      if (!decodes(t.type, options)) return bytes;
      const nPerRow = t.dims[0]!;
      const nRows = t.dims.slice(1).reduce((a, b) => a * b, 1);
      const values = native().dequantizeRows(t.type, new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), nRows, nPerRow);
      decoded.push({ name: t.name, type: ggmlTypeName(t.type) });
      return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
    },
  );
  return { file: out, decoded };
}

// ---- comparing a file with its twin ---------------------------------------------------------

/** Every position's logits of every prompt, with an F32 KV cache and one thread. */
export async function allLogits(file: string, prompts: ReadonlyArray<{ ids: number[] }>): Promise<Float32Array[][]> {
  const { openEngineModel } = await import('../../src/engine/model.js');
  const model = await openEngineModel(file);
  const ctx = await model.createContext({ kvType: 'f32', threads: 1 });
  try {
    const out: Float32Array[][] = [];
    for (const p of prompts) {
      await ctx.kvClear();
      await ctx.evaluate({ tokens: p.ids, positions: p.ids.map((_, i) => i), logits: 'all' });
      const rows: Float32Array[] = [];
      for (let i = 0; i < p.ids.length; i++) rows.push(await ctx.getLogits(i));
      out.push(rows);
    }
    return out;
  } finally {
    await ctx.dispose();
    model.dispose();
  }
}

/**
 * How much coarser the activation rounding of a file's products is than F16's, for the weight
 * types its twin decoded (ggml's vec_dot_type of each): F16 rounds an activation x to 11
 * significant bits, |error| ≤ 2^-11·|x|. BF16 keeps 8: ≤ 2^-8·|x|, ratio 2^3. The 8-bit block
 * types round x in blocks of n to 127 levels of the block's max|x|: |error| ≤ max|x|/254 ≈
 * 2^-8·max|x|, and max|x| ≤ √n × the block's RMS, so relative to a typical element the ratio
 * is at most 2^3·√n: n = 32 (Q8_0 activations: q8_0, q4_0, q4_1, q5_0, q5_1 weights) or 256 (Q8_K:
 * the k-quants).
 */
export function roundingRatio(decodedTypes: readonly string[]): number {
  let ratio = 1;
  for (const type of decodedTypes) {
    let r: number;
    if (type === 'f16') r = 1;
    else if (type === 'bf16') r = 2 ** 3;
    else if (/^q\d_K$/.test(type)) r = 2 ** 3 * Math.sqrt(256);
    else if (/^q(4_0|4_1|5_0|5_1|8_0)$/.test(type)) r = 2 ** 3 * Math.sqrt(32);
    else throw new Error(`roundingRatio: ${type}'s activation rounding is not described here`);
    ratio = Math.max(ratio, r);
  }
  return ratio;
}

/**
 * The tolerance against the twin, relative to the largest |logit|. Small roundings of the
 * activations move the logits in proportion to their size, so the F16 file against its F32 twin
 * measures how far this network carries a rounding of ≤ 2^-11 (F16's) to the logits: e16, the
 * largest relative last-row difference (at least 2^-11 itself, one rounding of the logits). A
 * file whose products round `ratio` times coarser (roundingRatio: 2^3·√32 for Q8_0 blocks,
 * 2^3·√256 for Q8_K, 2^3 for BF16) may differ from its twin by ratio × e16, × 2 for the spread of
 * a maximum over a few rows between runs and CPUs.
 */
export function twinTolerance(ratio: number, e16: number): number {
  return 2 * ratio * Math.max(e16, 2 ** -11);
}

export interface TwinComparison {
  /** max over the prompts' last rows of max|file − twin| / max|twin|. */
  lastRel: number;
  /** max over the prompts' last rows of max|file − twin| (logit units). */
  lastAbs: number;
  /** Other rows where the twin's top1−top2 margin exceeds `topMargin(lastAbs)`: their count, and those whose top-1 differs. */
  top1Checked: number;
  top1Rows: number;
  top1Mismatches: string[];
}

/**
 * The file's logits against its twin's. In full at every prompt's last row (what the caller
 * holds to a tolerance); at every other row only the decision: where the twin's top1−top2
 * margin exceeds 2 × (2 × lastAbs) the file's top-1 must be the twin's. Those rows' logits are
 * not compared, so this is a prediction the measured error has to bear out, not a consequence
 * of the tolerance check: twice the error measured at the last rows (a row elsewhere was seen
 * 1.4× above it, its top pair's difference 2.1×), and twice that, since a margin moves by the
 * errors of two logits.
 */
export function compareToTwin(file: Float32Array[][], twin: Float32Array[][], ids: ReadonlyArray<{ id: string }>): TwinComparison {
  let lastRel = 0;
  let lastAbs = 0;
  file.forEach((rows, p) => {
    const { diff, scale } = maxDiff(rows[rows.length - 1]!, twin[p]![rows.length - 1]!);
    lastRel = Math.max(lastRel, diff / scale);
    lastAbs = Math.max(lastAbs, diff);
  });
  const threshold = 2 * (2 * lastAbs);
  let checked = 0;
  let rowsSeen = 0;
  const mismatches: string[] = [];
  file.forEach((rows, p) => {
    for (let j = 0; j + 1 < rows.length; j++) {
      rowsSeen++;
      const t = twin[p]![j]!;
      const top = argmax(t);
      let second = -Infinity;
      for (let i = 0; i < t.length; i++) if (i !== top && t[i]! > second) second = t[i]!;
      if (t[top]! - second <= threshold) continue;
      checked++;
      const mine = argmax(rows[j]!);
      if (mine !== top) mismatches.push(`${ids[p]!.id} position ${j}: ${mine} instead of ${top} (margin ${(t[top]! - second).toFixed(3)})`);
    }
  });
  return { lastRel, lastAbs, top1Checked: checked, top1Rows: rowsSeen, top1Mismatches: mismatches };
}

type Prompts = ReadonlyArray<{ id: string; ids: number[] }>;

/** The F16 file against its F32 twin: how far this network carries a rounding of 2^-11 to the logits (e16 = lastRel). */
export async function calibrateF16(f16File: string, prompts: Prompts, f16Logits?: Float32Array[][]): Promise<TwinComparison> {
  const twin = await dequantizedTwin(f16File, { f16: true });
  return compareToTwin(f16Logits ?? (await allLogits(f16File, prompts)), await allLogits(twin.file, prompts), prompts);
}

/**
 * Asserts `file` against its twin: last rows within twinTolerance of its decoded types, and the
 * twin's top-1 wherever its margin is clear. Logs the figures; returns how many rows' top-1 was checked.
 */
export async function assertMatchesTwin(t: ExecutionContext, label: string, file: string, prompts: Prompts, e16: number, fileLogits?: Float32Array[][]): Promise<number> {
  const twin = await dequantizedTwin(file);
  const types = [...new Set(twin.decoded.map((x) => x.type))];
  const cmp = compareToTwin(fileLogits ?? (await allLogits(file, prompts)), await allLogits(twin.file, prompts), prompts);
  const ratio = roundingRatio(types);
  const tol = twinTolerance(ratio, e16);
  t.log(
    `${label} (decoded ${types.join(', ')}; ratio ${ratio.toFixed(1)}): last rows max rel ${cmp.lastRel.toExponential(2)} of tolerance ${tol.toExponential(2)} (abs ${cmp.lastAbs.toFixed(3)}); ` +
      `top-1 checked at ${cmp.top1Checked}/${cmp.top1Rows} other rows, ${cmp.top1Mismatches.length} differ`,
  );
  t.true(twin.decoded.length > 0, `${label}: the twin decoded something`);
  t.true(cmp.lastRel <= tol, `${label}: ${cmp.lastRel} > ${tol}`);
  t.deepEqual(cmp.top1Mismatches, [], label);
  return cmp.top1Checked;
}

/**
 * Which greedy steps a rounding error cannot flip. A run with rounding (F16 weights, an F16 KV
 * cache) is fed PyTorch's greedy continuation token by token beside the F32 file (which equals
 * PyTorch within F32_TOLERANCE of the largest |logit|), so its error is measured at every step
 * on the machine running the test. A step is decided when PyTorch's top1-top2 margin exceeds
 * twice that error: no rounding within it can swap the top two.
 */
import type { EngineContext } from '../../src/engine/context.js';
import { maxDiff } from './fixtures.js';

export const F32_TOLERANCE = 1e-4;
export const F16_TOLERANCE = 1e-2;

/**
 * The logits row of every greedy step: step 0 is the prompt's last position, step k > 0 the
 * row after feeding `continuation[k - 1]` alone (the decode path). Clears the cache first.
 */
export async function teacherForced(ctx: EngineContext, prompt: number[], continuation: number[]): Promise<Float32Array[]> {
  await ctx.kvClear();
  await ctx.evaluate({ tokens: prompt, positions: prompt.map((_, i) => i) });
  const rows = [await ctx.getLogits(prompt.length - 1)];
  for (let k = 0; k + 1 < continuation.length; k++) {
    await ctx.evaluate({ tokens: [continuation[k]!], positions: [prompt.length + k] });
    rows.push(await ctx.getLogits(0));
  }
  return rows;
}

export interface StepErrors {
  /** Per step: max|rounded − F32 file|, and that + the F32 file's own tolerance (a bound on |rounded − PyTorch|). */
  diffs: number[];
  bounds: number[];
  /** Per step: max|logit| of the F32 row. */
  scales: number[];
  /** Per step: the margin exceeds twice the bound. */
  decided: boolean[];
  /** Steps before the first undecided one: a free-running greedy continuation must match these. */
  prefix: number;
}

export function stepErrors(rounded: Float32Array[], f32: Float32Array[], margins: number[]): StepErrors {
  const diffs: number[] = [];
  const bounds: number[] = [];
  const scales: number[] = [];
  rounded.forEach((row, k) => {
    const { diff, scale } = maxDiff(row, f32[k]!);
    diffs.push(diff);
    scales.push(scale);
    bounds.push(diff + F32_TOLERANCE * scale);
  });
  const decided = bounds.map((b, k) => margins[k]! > 2 * b);
  const first = decided.indexOf(false);
  return { diffs, bounds, scales, decided, prefix: first < 0 ? decided.length : first };
}

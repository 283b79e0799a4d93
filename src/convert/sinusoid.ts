/**
 * XGLM's fixed sinusoidal position table, as transformers' XGLMSinusoidalPositionalEmbedding
 * computes it in float32: for table row p and column i < half = d_model/2,
 *   freq_i = exp(i · -(ln 10000 / (half − 1)))      (float32 multiply, float32 exp)
 *   row[i] = sin(p · freq_i), row[half + i] = cos(p · freq_i)
 * (a zero column is appended when d_model is odd; row 1, the padding row, is all zeros).
 * Every step is rounded to float32 as PyTorch does, because at p ≈ 2000 one float32 ulp of the
 * argument moves the sine by ~1e-4.
 */

/** The first table row the model reads: positions are offset by 2 (fairseq's padding_idx + 1). */
export const XGLM_POSITION_OFFSET = 2;

/** Rows [first, first + count) of the full table (row index = position id + 2), row-major float32. */
export function sinusoidRows(dModel: number, first: number, count: number): Float32Array {
  const half = Math.floor(dModel / 2);
  const step = Math.fround(-(Math.log(10000) / (half - 1)));
  const freq = new Float32Array(half);
  for (let i = 0; i < half; i++) freq[i] = Math.exp(Math.fround(i * step));
  const out = new Float32Array(count * dModel);
  for (let r = 0; r < count; r++) {
    const p = first + r;
    if (p === 1) continue; // padding_idx
    const row = r * dModel;
    for (let i = 0; i < half; i++) {
      const arg = Math.fround(p * freq[i]!);
      out[row + i] = Math.sin(arg);
      out[row + half + i] = Math.cos(arg);
    }
  }
  return out;
}

/** Rows of GGUF `position_embd.weight`: row t is the table row of position id t, i.e. t + 2. */
export function positionEmbeddingRows(dModel: number, first: number, count: number): Float32Array {
  return sinusoidRows(dModel, first + XGLM_POSITION_OFFSET, count);
}

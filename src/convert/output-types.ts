/**
 * Which ggml type each tensor gets for a requested output type, following llama.cpp's
 * llama_tensor_get_type for a model with tied embeddings and one fused attn_qkv per block
 * (see docs/converting.md for the table and the reasons):
 *
 *   - 1-D tensors (norms, biases), norms and position_embd stay F32;
 *   - f32/f16/bf16: every other matrix gets that type;
 *   - quantized types: token_embd, which is also the output projection, gets Q6_K, because
 *     logit errors hit every token — except in q8_0 files, the near-lossless tier, where it
 *     stays F16: with a Q8_0 table the fixtures' top-1 agreement with F32 falls below 90%
 *     (tiny-b 87.5%; the input lookup loses more than the output product); *_k_m mixes give attn_qkv one step more
 *     (Q5_K for q4_k_m, Q6_K for q5_k_m) and ffn_down Q6_K in the first and last eighth of the
 *     layers and every third layer between (llama.cpp's use_more_bits);
 *   - a matrix whose rows do not fit the chosen type's block size falls back as in llama.cpp
 *     (Q4_K→Q5_0, Q5_K→Q5_1, Q6_K→Q8_0; a 32-block type that still does not fit → F16).
 */
import { XglmError } from '../errors.js';
import { GGML_TYPE_TRAITS, GgmlType, LlamaFileType, ggmlTypeName } from '../gguf/types.js';

export interface OutputType {
  /** `general.file_type`. */
  fileType: LlamaFileType;
  /** The type most matrices get. */
  baseType: GgmlType;
  /** A mix that keeps some tensors at higher precision. */
  mix: 'none' | 'k_m';
}

/** The `--type` values, as the CLI and convert() accept them. */
export const OUTPUT_TYPES = {
  f32: { fileType: LlamaFileType.ALL_F32, baseType: GgmlType.F32, mix: 'none' },
  f16: { fileType: LlamaFileType.MOSTLY_F16, baseType: GgmlType.F16, mix: 'none' },
  bf16: { fileType: LlamaFileType.MOSTLY_BF16, baseType: GgmlType.BF16, mix: 'none' },
  q8_0: { fileType: LlamaFileType.MOSTLY_Q8_0, baseType: GgmlType.Q8_0, mix: 'none' },
  q6_k: { fileType: LlamaFileType.MOSTLY_Q6_K, baseType: GgmlType.Q6_K, mix: 'none' },
  q5_k_m: { fileType: LlamaFileType.MOSTLY_Q5_K_M, baseType: GgmlType.Q5_K, mix: 'k_m' },
  q5_0: { fileType: LlamaFileType.MOSTLY_Q5_0, baseType: GgmlType.Q5_0, mix: 'none' },
  q4_k_m: { fileType: LlamaFileType.MOSTLY_Q4_K_M, baseType: GgmlType.Q4_K, mix: 'k_m' },
  q4_0: { fileType: LlamaFileType.MOSTLY_Q4_0, baseType: GgmlType.Q4_0, mix: 'none' },
} as const satisfies Record<string, OutputType>;

export type OutputTypeName = keyof typeof OUTPUT_TYPES;

export function parseOutputType(type: unknown): OutputTypeName {
  if (typeof type === 'string' && Object.hasOwn(OUTPUT_TYPES, type.toLowerCase())) return type.toLowerCase() as OutputTypeName;
  throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `unknown output type ${JSON.stringify(type)}`, {
    hint: `use one of ${Object.keys(OUTPUT_TYPES).join(', ')}`,
  });
}

/** What a GGUF tensor is, from its name. */
export interface TensorRole {
  kind: 'token_embd' | 'output' | 'position_embd' | 'attn_qkv' | 'attn_output' | 'ffn_up' | 'ffn_down' | 'other';
  /** Block index for blk.N.* tensors. */
  layer: number | undefined;
}

export function tensorRole(name: string): TensorRole {
  if (name === 'token_embd.weight') return { kind: 'token_embd', layer: undefined };
  if (name === 'output.weight') return { kind: 'output', layer: undefined };
  if (name === 'position_embd.weight') return { kind: 'position_embd', layer: undefined };
  const m = /^blk\.(\d+)\.(attn_qkv|attn_output|ffn_up|ffn_down)\.weight$/.exec(name);
  if (m) return { kind: m[2] as TensorRole['kind'], layer: Number(m[1]) };
  return { kind: 'other', layer: undefined };
}

/** llama.cpp's use_more_bits: first and last eighth of the layers, and every third one between. */
export function useMoreBits(layer: number, nLayers: number): boolean {
  const eighth = Math.floor(nLayers / 8);
  return layer < eighth || layer >= Math.floor((7 * nLayers) / 8) || (layer - eighth) % 3 === 2;
}

/** llama.cpp's tensor_type_fallback for rows that do not fit the block size. */
function fallbackFor(type: GgmlType): GgmlType {
  switch (type) {
    case GgmlType.Q4_K:
      return GgmlType.Q5_0;
    case GgmlType.Q5_K:
      return GgmlType.Q5_1;
    case GgmlType.Q6_K:
      return GgmlType.Q8_0;
    default:
      return type;
  }
}

export interface TypeChoice {
  type: GgmlType;
  /** Set when the rows did not fit the preferred type: what it would have been. */
  fallbackFrom?: GgmlType;
}

function fits(type: GgmlType, rowLength: number): boolean {
  return rowLength % GGML_TYPE_TRAITS.get(type)!.blockSize === 0;
}

/**
 * The ggml type of one tensor.
 * @param dims ggml dims (dims[0] = row length)
 */
export function chooseTensorType(output: OutputTypeName, name: string, dims: readonly number[], nLayers: number): TypeChoice {
  const spec: OutputType = OUTPUT_TYPES[output];
  const role = tensorRole(name);
  // As llama.cpp: only 2-D "…weight" tensors are quantized, never norms or position embeddings.
  if (dims.length < 2 || role.kind === 'position_embd' || !name.endsWith('weight') || name.includes('_norm.weight')) {
    return { type: GgmlType.F32 };
  }
  if (spec.baseType === GgmlType.F32 || spec.baseType === GgmlType.F16 || spec.baseType === GgmlType.BF16) {
    return { type: spec.baseType };
  }
  const rowLength = dims[0]!;
  let wanted: GgmlType = spec.baseType;
  if (role.kind === 'token_embd' || role.kind === 'output') {
    // XGLM ties the two: token_embd is also the output projection.
    if (spec.baseType === GgmlType.Q8_0) return { type: GgmlType.F16 };
    wanted = !fits(spec.baseType, rowLength) ? GgmlType.Q8_0 : GgmlType.Q6_K;
  } else if (spec.mix === 'k_m' && role.kind === 'attn_qkv') {
    wanted = spec.baseType === GgmlType.Q4_K ? GgmlType.Q5_K : GgmlType.Q6_K;
  } else if (spec.mix === 'k_m' && role.kind === 'ffn_down' && useMoreBits(role.layer!, nLayers)) {
    wanted = GgmlType.Q6_K;
  }
  if (fits(wanted, rowLength)) return { type: wanted };
  let type = fallbackFor(wanted);
  if (!fits(type, rowLength)) type = GgmlType.F16;
  return { type, fallbackFrom: wanted };
}

export function describeFallback(name: string, rowLength: number, choice: TypeChoice): string {
  return `${name}: rows of ${rowLength} do not fit ${ggmlTypeName(choice.fallbackFrom!)} blocks; using ${ggmlTypeName(choice.type)}`;
}

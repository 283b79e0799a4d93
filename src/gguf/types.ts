/**
 * GGUF value types and ggml tensor types, in pure TypeScript so that reading and writing GGUF
 * metadata never needs the native addon. Numbers follow ggml's gguf.h and ggml.h (ggml 0.23.0);
 * test/gguf-types.test.ts checks the tensor-type table against the addon.
 */

/** `enum gguf_type`: the type tag of a metadata value. */
export const GgufValueType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;
export type GgufValueType = (typeof GgufValueType)[keyof typeof GgufValueType];

/** Bytes of one value of a fixed-size type (strings and arrays have no fixed size). */
export const GGUF_VALUE_SIZE: Readonly<Partial<Record<GgufValueType, number>>> = {
  [GgufValueType.UINT8]: 1,
  [GgufValueType.INT8]: 1,
  [GgufValueType.UINT16]: 2,
  [GgufValueType.INT16]: 2,
  [GgufValueType.UINT32]: 4,
  [GgufValueType.INT32]: 4,
  [GgufValueType.FLOAT32]: 4,
  [GgufValueType.BOOL]: 1,
  [GgufValueType.UINT64]: 8,
  [GgufValueType.INT64]: 8,
  [GgufValueType.FLOAT64]: 8,
};

export function ggufValueTypeName(type: number): string {
  const entry = Object.entries(GgufValueType).find(([, v]) => v === type);
  return entry ? entry[0].toLowerCase() : `type ${type}`;
}

/** An array value: numeric arrays are typed arrays, so 256k scores cost 1 MB, not 256k objects. */
export type GgufArrayItems =
  | Uint8Array
  | Int8Array
  | Uint16Array
  | Int16Array
  | Uint32Array
  | Int32Array
  | Float32Array
  | BigUint64Array
  | BigInt64Array
  | Float64Array
  | boolean[]
  | string[]
  | GgufArray[];

export interface GgufArray {
  itemType: GgufValueType;
  items: GgufArrayItems;
}

/** uint64/int64 are bigint; every other number is a JS number; bool is boolean. */
export type GgufValue = number | bigint | boolean | string | GgufArray;

/** One metadata key/value pair with its exact type, so a file can be written back byte for byte. */
export interface GgufKv {
  key: string;
  type: GgufValueType;
  value: GgufValue;
}

/** ggml tensor types (`enum ggml_type`). Gaps are ids ggml has retired. */
export const GgmlType = {
  F32: 0,
  F16: 1,
  Q4_0: 2,
  Q4_1: 3,
  Q5_0: 6,
  Q5_1: 7,
  Q8_0: 8,
  Q8_1: 9,
  Q2_K: 10,
  Q3_K: 11,
  Q4_K: 12,
  Q5_K: 13,
  Q6_K: 14,
  Q8_K: 15,
  IQ2_XXS: 16,
  IQ2_XS: 17,
  IQ3_XXS: 18,
  IQ1_S: 19,
  IQ4_NL: 20,
  IQ3_S: 21,
  IQ2_S: 22,
  IQ4_XS: 23,
  I8: 24,
  I16: 25,
  I32: 26,
  I64: 27,
  F64: 28,
  IQ1_M: 29,
  BF16: 30,
  TQ1_0: 34,
  TQ2_0: 35,
  MXFP4: 39,
  NVFP4: 40,
  Q1_0: 41,
  Q2_0: 42,
} as const;
export type GgmlType = (typeof GgmlType)[keyof typeof GgmlType];

export interface GgmlTypeTraits {
  /** ggml's name (`ggml_type_name`), e.g. "q4_K". */
  name: string;
  /** Elements per block; a row's length must be a multiple of it. */
  blockSize: number;
  /** Bytes per block. */
  typeSize: number;
}

/** Block layout of every type ggml 0.23.0 can store in a GGUF file. */
export const GGML_TYPE_TRAITS: ReadonlyMap<number, GgmlTypeTraits> = new Map<number, GgmlTypeTraits>([
  [GgmlType.F32, { name: 'f32', blockSize: 1, typeSize: 4 }],
  [GgmlType.F16, { name: 'f16', blockSize: 1, typeSize: 2 }],
  [GgmlType.Q4_0, { name: 'q4_0', blockSize: 32, typeSize: 18 }],
  [GgmlType.Q4_1, { name: 'q4_1', blockSize: 32, typeSize: 20 }],
  [GgmlType.Q5_0, { name: 'q5_0', blockSize: 32, typeSize: 22 }],
  [GgmlType.Q5_1, { name: 'q5_1', blockSize: 32, typeSize: 24 }],
  [GgmlType.Q8_0, { name: 'q8_0', blockSize: 32, typeSize: 34 }],
  [GgmlType.Q8_1, { name: 'q8_1', blockSize: 32, typeSize: 36 }],
  [GgmlType.Q2_K, { name: 'q2_K', blockSize: 256, typeSize: 84 }],
  [GgmlType.Q3_K, { name: 'q3_K', blockSize: 256, typeSize: 110 }],
  [GgmlType.Q4_K, { name: 'q4_K', blockSize: 256, typeSize: 144 }],
  [GgmlType.Q5_K, { name: 'q5_K', blockSize: 256, typeSize: 176 }],
  [GgmlType.Q6_K, { name: 'q6_K', blockSize: 256, typeSize: 210 }],
  [GgmlType.Q8_K, { name: 'q8_K', blockSize: 256, typeSize: 292 }],
  [GgmlType.IQ2_XXS, { name: 'iq2_xxs', blockSize: 256, typeSize: 66 }],
  [GgmlType.IQ2_XS, { name: 'iq2_xs', blockSize: 256, typeSize: 74 }],
  [GgmlType.IQ3_XXS, { name: 'iq3_xxs', blockSize: 256, typeSize: 98 }],
  [GgmlType.IQ1_S, { name: 'iq1_s', blockSize: 256, typeSize: 50 }],
  [GgmlType.IQ4_NL, { name: 'iq4_nl', blockSize: 32, typeSize: 18 }],
  [GgmlType.IQ3_S, { name: 'iq3_s', blockSize: 256, typeSize: 110 }],
  [GgmlType.IQ2_S, { name: 'iq2_s', blockSize: 256, typeSize: 82 }],
  [GgmlType.IQ4_XS, { name: 'iq4_xs', blockSize: 256, typeSize: 136 }],
  [GgmlType.I8, { name: 'i8', blockSize: 1, typeSize: 1 }],
  [GgmlType.I16, { name: 'i16', blockSize: 1, typeSize: 2 }],
  [GgmlType.I32, { name: 'i32', blockSize: 1, typeSize: 4 }],
  [GgmlType.I64, { name: 'i64', blockSize: 1, typeSize: 8 }],
  [GgmlType.F64, { name: 'f64', blockSize: 1, typeSize: 8 }],
  [GgmlType.IQ1_M, { name: 'iq1_m', blockSize: 256, typeSize: 56 }],
  [GgmlType.BF16, { name: 'bf16', blockSize: 1, typeSize: 2 }],
  [GgmlType.TQ1_0, { name: 'tq1_0', blockSize: 256, typeSize: 54 }],
  [GgmlType.TQ2_0, { name: 'tq2_0', blockSize: 256, typeSize: 66 }],
  [GgmlType.MXFP4, { name: 'mxfp4', blockSize: 32, typeSize: 17 }],
  [GgmlType.NVFP4, { name: 'nvfp4', blockSize: 64, typeSize: 36 }],
  [GgmlType.Q1_0, { name: 'q1_0', blockSize: 128, typeSize: 18 }],
  [GgmlType.Q2_0, { name: 'q2_0', blockSize: 64, typeSize: 18 }],
]);

export function ggmlTypeName(type: number): string {
  return GGML_TYPE_TRAITS.get(type)?.name ?? `type ${type}`;
}

/** Bytes of a tensor with ggml dims `dims` (dims[0] = row length), or undefined if a row does not fit the blocks. */
export function ggmlTensorBytes(type: number, dims: readonly number[]): number | undefined {
  const traits = GGML_TYPE_TRAITS.get(type);
  if (!traits) return undefined;
  const rowLength = dims.length > 0 ? dims[0]! : 1;
  if (rowLength % traits.blockSize !== 0) return undefined;
  let rows = 1;
  for (let i = 1; i < dims.length; i++) rows *= dims[i]!;
  return (rowLength / traits.blockSize) * traits.typeSize * rows;
}

/** `general.file_type` values (llama.cpp's `enum llama_ftype`) for the types this package writes. */
export const LlamaFileType = {
  ALL_F32: 0,
  MOSTLY_F16: 1,
  MOSTLY_Q4_0: 2,
  MOSTLY_Q8_0: 7,
  MOSTLY_Q5_0: 8,
  MOSTLY_Q4_K_M: 15,
  MOSTLY_Q5_K_M: 17,
  MOSTLY_Q6_K: 18,
  MOSTLY_BF16: 32,
} as const;
export type LlamaFileType = (typeof LlamaFileType)[keyof typeof LlamaFileType];

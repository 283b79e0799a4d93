/**
 * Checkpoint tensors as the converter sees them: a name, a dtype, a PyTorch shape, and rows
 * read on demand as float32 (a row is the last dimension; a 1-D tensor is one row). Readers for
 * safetensors and pytorch_model.bin both reduce to a strided view over bytes in a file, so a
 * 1 GB embedding is never held whole: the converter asks for a few thousand rows at a time.
 */
import fs from 'node:fs';
import { XglmError } from '../errors.js';
import { TORCH_DTYPE_BYTES, type TorchDtype } from './pickle.js';

/** Source element types the converter accepts. */
export type FloatDtype = 'F32' | 'F16' | 'BF16';

export interface SourceTensor {
  name: string;
  dtype: TorchDtype;
  /** PyTorch order: a Linear weight is [out_features, in_features]. */
  shape: number[];
}

export interface TensorSource {
  /** What the checkpoint holds, in its own order. */
  readonly tensors: ReadonlyMap<string, SourceTensor>;
  /** Human-readable origin (file names) for messages. */
  readonly description: string;
  /** Rows [first, first + count) as float32 (row length = last dim, 1 for a scalar). */
  readRows(name: string, first: number, count: number): Float32Array;
  /** True when both names are known to share their data (same storage, offset and strides). */
  sameData(a: string, b: string): boolean;
  close(): void;
}

export function rowLength(shape: readonly number[]): number {
  return shape.length === 0 ? 1 : shape[shape.length - 1]!;
}

export function rowCount(shape: readonly number[]): number {
  let n = 1;
  for (let i = 0; i < shape.length - 1; i++) n *= shape[i]!;
  return n;
}

const f16Table = (() => {
  // All 65536 halves as float32: exact, and faster than bit twiddling per element.
  const out = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    out[h] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? Number.NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return out;
})();

/** Decodes `count` little-endian elements of a float dtype at `bytes` into `out`. */
export function decodeFloats(dtype: TorchDtype, bytes: Uint8Array, out: Float32Array, outOffset = 0): void {
  const count = bytes.length / TORCH_DTYPE_BYTES[dtype];
  if (dtype === 'F32') {
    new Uint8Array(out.buffer, out.byteOffset + outOffset * 4, count * 4).set(bytes);
  } else if (dtype === 'F16' || dtype === 'BF16') {
    // Typed arrays are little-endian on every platform Node runs on; copy when unaligned.
    const halves = bytes.byteOffset % 2 === 0 ? new Uint16Array(bytes.buffer, bytes.byteOffset, count) : new Uint16Array(bytes.slice().buffer);
    if (dtype === 'F16') {
      for (let i = 0; i < count; i++) out[outOffset + i] = f16Table[halves[i]!]!;
    } else {
      const u32 = new Uint32Array(out.buffer, out.byteOffset + outOffset * 4, count);
      for (let i = 0; i < count; i++) u32[i] = halves[i]! << 16;
    }
  } else {
    throw new XglmError('ERR_XGLM_UNSUPPORTED', `cannot convert ${dtype} weights`, { hint: 'weights must be float32, float16 or bfloat16' });
  }
}

/**
 * A tensor as elements of a storage that starts at `base` in a file: element (i0, i1, …) is at
 * base + (storageOffset + Σ ik·stride[k]) · elementBytes.
 */
export interface StridedLocation {
  /** A file descriptor, or the bytes themselves (an inflated zip entry). */
  fd: number | Uint8Array;
  base: number;
  /** Elements available from `base` (for bounds checks). */
  storageElements: number;
  storageOffset: number;
  dtype: TorchDtype;
  shape: number[];
  stride: number[];
}

export function contiguousStride(shape: readonly number[]): number[] {
  const stride = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    stride[i] = s;
    s *= shape[i]!;
  }
  return stride;
}

/** Checks that every element of the view lies inside its storage. */
export function checkStridedBounds(loc: StridedLocation, what: string): void {
  let numel = 1;
  let last = loc.storageOffset;
  for (let i = 0; i < loc.shape.length; i++) {
    numel *= loc.shape[i]!;
    last += (loc.shape[i]! - 1) * loc.stride[i]!;
  }
  if (numel > 0 && (last >= loc.storageElements || !Number.isSafeInteger(last))) {
    throw new XglmError('ERR_XGLM_CONVERT', `${what} reaches element ${last} of a storage of ${loc.storageElements}`, {
      hint: 'the checkpoint is damaged',
    });
  }
}

function readFully(fd: number | Uint8Array, into: Uint8Array, position: number): void {
  if (fd instanceof Uint8Array) {
    into.set(fd.subarray(position, position + into.length));
    return;
  }
  let done = 0;
  while (done < into.length) {
    const got = fs.readSync(fd, into, done, into.length - done, position + done);
    if (got === 0) throw new XglmError('ERR_XGLM_CONVERT', 'checkpoint file ends early', { hint: 'download it again' });
    done += got;
  }
}

/** Reads rows [first, first + count) of a strided view as float32. */
export function readStridedRows(loc: StridedLocation, first: number, count: number): Float32Array {
  const elemBytes = TORCH_DTYPE_BYTES[loc.dtype];
  const n = rowLength(loc.shape);
  const rows = rowCount(loc.shape);
  if (first < 0 || count < 0 || first + count > rows) {
    throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `rows ${first}..${first + count} outside ${rows}`);
  }
  const out = new Float32Array(count * n);
  const contiguous = contiguousStride(loc.shape);
  const isContiguous = loc.shape.every((d, i) => d <= 1 || loc.stride[i] === contiguous[i]);
  if (isContiguous && loc.dtype === 'F32') {
    readFully(loc.fd, new Uint8Array(out.buffer), loc.base + (loc.storageOffset + first * n) * elemBytes);
    return out;
  }
  if (isContiguous) {
    const bytes = new Uint8Array(count * n * elemBytes);
    readFully(loc.fd, bytes, loc.base + (loc.storageOffset + first * n) * elemBytes);
    decodeFloats(loc.dtype, bytes, out);
    return out;
  }
  // General strides (rare in state dicts: a transposed or sliced tensor saved as is): gather one
  // row at a time; elements of a row are `lastStride` apart.
  const lastStride = loc.shape.length ? loc.stride[loc.shape.length - 1]! : 1;
  const span = new Uint8Array(((n - 1) * lastStride + 1) * elemBytes);
  const row = new Uint8Array(n * elemBytes);
  const outer = loc.shape.slice(0, -1);
  for (let r = 0; r < count; r++) {
    let rem = first + r;
    let offset = loc.storageOffset;
    for (let d = outer.length - 1; d >= 0; d--) {
      offset += (rem % outer[d]!) * loc.stride[d]!;
      rem = Math.floor(rem / outer[d]!);
    }
    readFully(loc.fd, span, loc.base + offset * elemBytes);
    for (let i = 0; i < n; i++) row.set(span.subarray(i * lastStride * elemBytes, (i * lastStride + 1) * elemBytes), i * elemBytes);
    decodeFloats(loc.dtype, row, out, r * n);
  }
  return out;
}

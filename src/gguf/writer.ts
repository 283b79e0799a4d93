/**
 * A streaming GGUF v3 writer: the header (metadata + tensor infos) is written first, then each
 * tensor's data in the order of the infos, each padded with zeros to the alignment, so that
 * ggml's gguf.cpp finds offsets exactly where it computes them. The file is written under a
 * temporary name and renamed into place by finish(), so a failed conversion leaves nothing behind.
 */
import fs from 'node:fs';
import { XglmError } from '../errors.js';
import { GGUF_DEFAULT_ALIGNMENT, GGUF_KEY_ALIGNMENT, GGUF_LIMITS, GGUF_MAGIC } from './reader.js';
import {
  GGML_TYPE_TRAITS,
  type GgufArray,
  type GgufKv,
  type GgufValue,
  GgufValueType,
  ggmlTensorBytes,
  ggmlTypeName,
  ggufValueTypeName,
} from './types.js';
import { renameIntoPlace } from '../files.js';

export const GGUF_WRITE_VERSION = 3;

/** A tensor as the writer needs it: its data size follows from dims and type. */
export interface GgufTensorSpec {
  name: string;
  /** ggml order: dims[0] is the row length. */
  dims: number[];
  /** ggml type id. */
  type: number;
}

function badArgument(message: string): XglmError {
  return new XglmError('ERR_XGLM_INVALID_ARGUMENT', `GGUF writer: ${message}`);
}

/** Growable little-endian byte sink. */
class ByteSink {
  private buf = Buffer.alloc(1 << 16);
  length = 0;

  /** Makes room for n bytes and returns where they go; may replace this.buf, so call it before touching the buffer. */
  private reserve(n: number): number {
    if (this.length + n > this.buf.length) {
      const next = Buffer.alloc(Math.max(this.buf.length * 2, this.length + n));
      this.buf.copy(next, 0, 0, this.length);
      this.buf = next;
    }
    const at = this.length;
    this.length += n;
    return at;
  }

  u8(v: number): void {
    const at = this.reserve(1);
    this.buf.writeUInt8(v, at);
  }
  i8(v: number): void {
    const at = this.reserve(1);
    this.buf.writeInt8(v, at);
  }
  u16(v: number): void {
    const at = this.reserve(2);
    this.buf.writeUInt16LE(v, at);
  }
  i16(v: number): void {
    const at = this.reserve(2);
    this.buf.writeInt16LE(v, at);
  }
  u32(v: number): void {
    const at = this.reserve(4);
    this.buf.writeUInt32LE(v, at);
  }
  i32(v: number): void {
    const at = this.reserve(4);
    this.buf.writeInt32LE(v, at);
  }
  f32(v: number): void {
    const at = this.reserve(4);
    this.buf.writeFloatLE(v, at);
  }
  f64(v: number): void {
    const at = this.reserve(8);
    this.buf.writeDoubleLE(v, at);
  }
  u64(v: number | bigint): void {
    const at = this.reserve(8);
    this.buf.writeBigUInt64LE(BigInt(v), at);
  }
  i64(v: bigint): void {
    const at = this.reserve(8);
    this.buf.writeBigInt64LE(v, at);
  }
  raw(bytes: Uint8Array): void {
    const at = this.reserve(bytes.length);
    this.buf.set(bytes, at);
  }
  string(s: string): void {
    const bytes = Buffer.from(s, 'utf8');
    this.u64(bytes.length);
    this.raw(bytes);
  }
  padTo(alignment: number): void {
    const pad = (alignment - (this.length % alignment)) % alignment;
    this.reserve(pad); // already zero: the buffer is zero-filled
  }
  bytes(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

function checkInteger(v: GgufValue, key: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw badArgument(`"${key}" must be an integer in [${min}, ${max}], got ${String(v)}`);
  }
  return v;
}

function writeScalar(sink: ByteSink, type: GgufValueType, v: GgufValue, key: string): void {
  switch (type) {
    case GgufValueType.UINT8:
      return sink.u8(checkInteger(v, key, 0, 0xff));
    case GgufValueType.INT8:
      return sink.i8(checkInteger(v, key, -0x80, 0x7f));
    case GgufValueType.UINT16:
      return sink.u16(checkInteger(v, key, 0, 0xffff));
    case GgufValueType.INT16:
      return sink.i16(checkInteger(v, key, -0x8000, 0x7fff));
    case GgufValueType.UINT32:
      return sink.u32(checkInteger(v, key, 0, 0xffffffff));
    case GgufValueType.INT32:
      return sink.i32(checkInteger(v, key, -0x80000000, 0x7fffffff));
    case GgufValueType.FLOAT32:
    case GgufValueType.FLOAT64:
      if (typeof v !== 'number') throw badArgument(`"${key}" must be a number`);
      return type === GgufValueType.FLOAT32 ? sink.f32(v) : sink.f64(v);
    case GgufValueType.BOOL:
      if (typeof v !== 'boolean') throw badArgument(`"${key}" must be a boolean`);
      return sink.u8(v ? 1 : 0);
    case GgufValueType.STRING:
      if (typeof v !== 'string') throw badArgument(`"${key}" must be a string`);
      return sink.string(v);
    case GgufValueType.UINT64:
      if (typeof v !== 'bigint' || v < 0n || v >= 1n << 64n) throw badArgument(`"${key}" must be a uint64 bigint`);
      return sink.u64(v);
    case GgufValueType.INT64:
      if (typeof v !== 'bigint' || v < -(1n << 63n) || v >= 1n << 63n) throw badArgument(`"${key}" must be an int64 bigint`);
      return sink.i64(v);
    case GgufValueType.ARRAY:
      return writeArray(sink, v, key, 1);
    default:
      throw badArgument(`"${key}" has unknown value type ${String(type)}`);
  }
}

/** The typed array each numeric item type must arrive in. */
const TYPED_ARRAY_OF: Partial<Record<GgufValueType, new (n: number) => ArrayBufferView>> = {
  [GgufValueType.UINT8]: Uint8Array,
  [GgufValueType.INT8]: Int8Array,
  [GgufValueType.UINT16]: Uint16Array,
  [GgufValueType.INT16]: Int16Array,
  [GgufValueType.UINT32]: Uint32Array,
  [GgufValueType.INT32]: Int32Array,
  [GgufValueType.FLOAT32]: Float32Array,
  [GgufValueType.UINT64]: BigUint64Array,
  [GgufValueType.INT64]: BigInt64Array,
  [GgufValueType.FLOAT64]: Float64Array,
};

function writeArray(sink: ByteSink, v: GgufValue, key: string, depth: number): void {
  if (typeof v !== 'object' || v === null || !('itemType' in v)) throw badArgument(`"${key}" must be an array value`);
  if (depth > GGUF_LIMITS.maxArrayDepth) throw badArgument(`"${key}": arrays nested deeper than ${GGUF_LIMITS.maxArrayDepth}`);
  const { itemType, items } = v as GgufArray;
  sink.u32(itemType);
  sink.u64(items.length);
  const typed = TYPED_ARRAY_OF[itemType];
  if (typed) {
    if (!(items instanceof typed)) throw badArgument(`"${key}": ${ggufValueTypeName(itemType)} items must be a ${typed.name}`);
    // Typed arrays are little-endian on every platform Node supports.
    const view = items as ArrayBufferView;
    sink.raw(new Uint8Array(view.buffer, view.byteOffset, view.byteLength));
    return;
  }
  if (!Array.isArray(items)) throw badArgument(`"${key}": ${ggufValueTypeName(itemType)} items must be a plain array`);
  if (itemType === GgufValueType.BOOL) {
    for (const b of items) writeScalar(sink, GgufValueType.BOOL, b as GgufValue, key);
  } else if (itemType === GgufValueType.STRING) {
    for (const s of items) writeScalar(sink, GgufValueType.STRING, s as GgufValue, key);
  } else if (itemType === GgufValueType.ARRAY) {
    for (const a of items) writeArray(sink, a as GgufValue, key, depth + 1);
  } else {
    throw badArgument(`"${key}" has unknown item type ${String(itemType)}`);
  }
}

/** The alignment a metadata list asks for (general.alignment, else 32). */
export function alignmentOf(kv: readonly GgufKv[]): number {
  const entry = kv.find((e) => e.key === GGUF_KEY_ALIGNMENT);
  if (!entry) return GGUF_DEFAULT_ALIGNMENT;
  const a = entry.value;
  if (entry.type !== GgufValueType.UINT32 || typeof a !== 'number' || a === 0 || (a & (a - 1)) !== 0 || a > GGUF_LIMITS.maxAlignment) {
    throw badArgument(`${GGUF_KEY_ALIGNMENT} must be a uint32 power of two up to ${GGUF_LIMITS.maxAlignment}`);
  }
  return a;
}

export interface GgufLayout {
  /** Header bytes including the padding before the data section. */
  header: Buffer;
  alignment: number;
  /** Offset of each tensor in the data section. */
  offsets: number[];
  /** Bytes of each tensor (before padding). */
  byteLengths: number[];
  /** Bytes of the whole file. */
  fileSize: number;
}

/** Serializes metadata and tensor infos; data offsets are laid out back to back, each aligned. */
export function encodeGgufHeader(kv: readonly GgufKv[], tensors: readonly GgufTensorSpec[]): GgufLayout {
  const alignment = alignmentOf(kv);
  const sink = new ByteSink();
  sink.u32(GGUF_MAGIC);
  sink.u32(GGUF_WRITE_VERSION);
  sink.u64(tensors.length);
  sink.u64(kv.length);
  const keys = new Set<string>();
  for (const entry of kv) {
    if (!entry.key || Buffer.byteLength(entry.key) > GGUF_LIMITS.maxKeyBytes) throw badArgument(`invalid key "${entry.key}"`);
    if (keys.has(entry.key)) throw badArgument(`duplicate key "${entry.key}"`);
    keys.add(entry.key);
    sink.string(entry.key);
    sink.u32(entry.type);
    writeScalar(sink, entry.type, entry.value, entry.key);
  }
  const offsets: number[] = [];
  const byteLengths: number[] = [];
  const names = new Set<string>();
  let offset = 0;
  for (const t of tensors) {
    if (!t.name || Buffer.byteLength(t.name) > GGUF_LIMITS.maxTensorNameBytes) throw badArgument(`invalid tensor name "${t.name}"`);
    if (names.has(t.name)) throw badArgument(`duplicate tensor "${t.name}"`);
    names.add(t.name);
    if (t.dims.length > GGUF_LIMITS.maxDims || t.dims.some((d) => !Number.isSafeInteger(d) || d < 0)) {
      throw badArgument(`tensor "${t.name}" has invalid dims [${t.dims.join(', ')}]`);
    }
    if (!GGML_TYPE_TRAITS.has(t.type)) throw badArgument(`tensor "${t.name}" has unknown ggml type ${t.type}`);
    const bytes = ggmlTensorBytes(t.type, t.dims);
    if (bytes === undefined) throw badArgument(`tensor "${t.name}" rows of ${t.dims[0]} do not fit ${ggmlTypeName(t.type)} blocks`);
    sink.string(t.name);
    sink.u32(t.dims.length);
    for (const d of t.dims) sink.u64(d);
    sink.u32(t.type);
    sink.u64(offset);
    offsets.push(offset);
    byteLengths.push(bytes);
    offset += Math.ceil(bytes / alignment) * alignment;
  }
  if (tensors.length > 0) sink.padTo(alignment);
  const header = Buffer.from(sink.bytes());
  return { header, alignment, offsets, byteLengths, fileSize: header.length + offset };
}

const ZERO_PAD = new Uint8Array(GGUF_LIMITS.maxAlignment);

/**
 * Writes a GGUF file tensor by tensor. Usage:
 *   const w = await GgufWriter.create(out, kv, tensors);
 *   for each tensor in order: await w.write(bytes) (one or more chunks, exactly its byte length)
 *   await w.finish();   // or await w.abort() on failure
 */
export class GgufWriter {
  private index = 0;
  private writtenInTensor = 0;
  private position: number;
  private closed = false;

  private constructor(
    readonly file: string,
    private readonly tmpFile: string,
    private readonly handle: fs.promises.FileHandle,
    readonly layout: GgufLayout,
    readonly tensors: readonly GgufTensorSpec[],
  ) {
    this.position = layout.header.length;
  }

  static async create(file: string, kv: readonly GgufKv[], tensors: readonly GgufTensorSpec[]): Promise<GgufWriter> {
    const layout = encodeGgufHeader(kv, tensors);
    const tmpFile = `${file}.partial`;
    let handle: fs.promises.FileHandle;
    try {
      handle = await fs.promises.open(tmpFile, 'w');
    } catch (cause) {
      throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `cannot write ${file}: ${(cause as Error).message}`, {
        cause,
        hint: 'check that the output folder exists and is writable',
      });
    }
    const writer = new GgufWriter(file, tmpFile, handle, layout, tensors);
    try {
      await writer.writeAt(layout.header, 0);
    } catch (err) {
      await writer.abort();
      throw err;
    }
    return writer;
  }

  /** The tensor the next write() belongs to, or undefined when all are written. */
  get current(): GgufTensorSpec | undefined {
    return this.tensors[this.index];
  }

  /** Bytes of the file written so far. */
  get bytesWritten(): number {
    return this.position;
  }

  private async writeAt(bytes: Uint8Array, position: number): Promise<void> {
    let done = 0;
    while (done < bytes.length) {
      const { bytesWritten } = await this.handle.write(bytes, done, bytes.length - done, position + done);
      done += bytesWritten;
    }
  }

  /** Appends data of the current tensor; pads and moves on when the tensor is complete. */
  async write(chunk: Uint8Array): Promise<void> {
    if (this.closed) throw badArgument('write after finish/abort');
    const spec = this.current;
    if (!spec) throw badArgument('more data than tensors');
    const expected = this.layout.byteLengths[this.index]!;
    if (this.writtenInTensor + chunk.length > expected) {
      throw badArgument(`tensor "${spec.name}" takes ${expected} bytes, got at least ${this.writtenInTensor + chunk.length}`);
    }
    await this.writeAt(chunk, this.position);
    this.position += chunk.length;
    this.writtenInTensor += chunk.length;
    if (this.writtenInTensor === expected) {
      const pad = (this.layout.alignment - (expected % this.layout.alignment)) % this.layout.alignment;
      if (pad) await this.writeAt(ZERO_PAD.subarray(0, pad), this.position);
      this.position += pad;
      this.index++;
      this.writtenInTensor = 0;
    }
  }

  /** Closes the file and moves it into place; every tensor must have been written. */
  async finish(): Promise<void> {
    if (this.closed) throw badArgument('finish after finish/abort');
    if (this.index < this.tensors.length) {
      await this.abort();
      throw badArgument(`finish() before tensor "${this.tensors[this.index]!.name}" was written`);
    }
    this.closed = true;
    await this.handle.close();
    await renameIntoPlace(this.tmpFile, this.file);
  }

  /** Closes and deletes the partial file. */
  async abort(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.handle.close().catch(() => undefined);
    await fs.promises.rm(this.tmpFile, { force: true });
  }
}

/** Metadata helpers: `kv.u32('xglm.block_count', 24)` etc. */
export const kv = {
  u8: (key: string, value: number): GgufKv => ({ key, type: GgufValueType.UINT8, value }),
  u32: (key: string, value: number): GgufKv => ({ key, type: GgufValueType.UINT32, value }),
  i32: (key: string, value: number): GgufKv => ({ key, type: GgufValueType.INT32, value }),
  f32: (key: string, value: number): GgufKv => ({ key, type: GgufValueType.FLOAT32, value }),
  bool: (key: string, value: boolean): GgufKv => ({ key, type: GgufValueType.BOOL, value }),
  str: (key: string, value: string): GgufKv => ({ key, type: GgufValueType.STRING, value }),
  strings: (key: string, items: string[]): GgufKv => ({ key, type: GgufValueType.ARRAY, value: { itemType: GgufValueType.STRING, items } }),
  f32s: (key: string, items: Float32Array): GgufKv => ({ key, type: GgufValueType.ARRAY, value: { itemType: GgufValueType.FLOAT32, items } }),
  i32s: (key: string, items: Int32Array): GgufKv => ({ key, type: GgufValueType.ARRAY, value: { itemType: GgufValueType.INT32, items } }),
  u8s: (key: string, items: Uint8Array): GgufKv => ({ key, type: GgufValueType.ARRAY, value: { itemType: GgufValueType.UINT8, items } }),
};

/**
 * A defensive GGUF reader (versions 2 and 3, little-endian).
 *
 * File layout:
 *   "GGUF" u32 version, u64 n_tensors, u64 n_kv
 *   n_kv ×      string key, u32 value type, value
 *   n_tensors × string name, u32 n_dims, u64 dims[n_dims] (dims[0] = row length), u32 ggml type,
 *               u64 offset (relative to the data section)
 *   zero padding to `general.alignment` (default 32), then the data section
 * where a string is u64 byte length + UTF-8 bytes and an array is u32 item type + u64 count + items.
 *
 * The header is read through a small window on a file descriptor (never the whole file); every
 * length and count is checked against the table below and against the bytes left in the file
 * before anything is allocated. Tensor data is read on demand.
 */
import fs from 'node:fs';
import { XglmError } from '../errors.js';
import {
  GGML_TYPE_TRAITS,
  GGUF_VALUE_SIZE,
  type GgufArray,
  type GgufArrayItems,
  type GgufKv,
  type GgufValue,
  GgufValueType,
  ggmlTensorBytes,
  ggmlTypeName,
  ggufValueTypeName,
} from './types.js';

/** Every limit the reader enforces, in one place. */
export const GGUF_LIMITS = {
  /** Longest metadata key, in bytes. */
  maxKeyBytes: 65_535,
  /** Longest string value (a chat template or a huge token), in bytes. */
  maxStringBytes: 16 * 1024 * 1024,
  /** Most items in one array (tokens of the largest vocabularies are ~10^6; charsmaps a few MB). */
  maxArrayItems: 64 * 1024 * 1024,
  /** Arrays of arrays nest at most this deep (GGUF allows them; ggml's gguf.cpp does not load them). */
  maxArrayDepth: 2,
  /** Most metadata pairs. */
  maxKvCount: 1 << 16,
  /** Most tensors. */
  maxTensorCount: 1 << 20,
  /** ggml's GGML_MAX_NAME is 64 including the NUL. */
  maxTensorNameBytes: 63,
  /** ggml's GGML_MAX_DIMS. */
  maxDims: 4,
  /** Largest alignment accepted (a power of two). */
  maxAlignment: 1 << 20,
  /** Largest file offset, element count or byte size: exactly representable in a JS number. */
  maxSafeInteger: Number.MAX_SAFE_INTEGER,
} as const;

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_DEFAULT_ALIGNMENT = 32;
export const GGUF_KEY_ALIGNMENT = 'general.alignment';

export interface GgufTensorInfo {
  name: string;
  /** ggml order: dims[0] is the row length (a PyTorch [out, in] weight has dims [in, out]). */
  dims: number[];
  /** ggml type id. */
  type: number;
  /** Offset from the start of the data section. */
  offset: number;
  /** Bytes of data. */
  byteLength: number;
}

export interface GgufHeader {
  version: number;
  alignment: number;
  kv: GgufKv[];
  tensors: GgufTensorInfo[];
  /** File offset of the data section (after the tensor infos and the alignment padding). */
  dataOffset: number;
  /** File offset where the tensor infos end (before the padding). */
  headerEnd: number;
  fileSize: number;
}

function invalid(message: string, file: string): XglmError {
  return new XglmError('ERR_XGLM_GGUF_INVALID', `${file}: invalid GGUF: ${message}`, {
    hint: 'the file is truncated or not a GGUF model; re-download or re-convert it',
  });
}

function overLimit(message: string, file: string): XglmError {
  return new XglmError('ERR_XGLM_GGUF_LIMIT', `${file}: GGUF ${message}`, {
    hint: 'the file is damaged or was not written for this reader',
  });
}

const WINDOW_BYTES = 1 << 20;
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** A forward cursor over a file descriptor through a refilled window. */
class FileCursor {
  pos = 0;
  private window: Buffer = Buffer.alloc(0);
  private windowStart = 0;

  constructor(
    private readonly fd: number,
    readonly fileSize: number,
    readonly file: string,
  ) {}

  get remaining(): number {
    return this.fileSize - this.pos;
  }

  /** Makes `n` bytes at `pos` available in the window; returns their index in it. */
  private need(n: number, what: string): number {
    if (n > this.remaining) throw invalid(`${what} runs past the end of the file (offset ${this.pos})`, this.file);
    const rel = this.pos - this.windowStart;
    if (rel >= 0 && rel + n <= this.window.length) return rel;
    const size = Math.min(Math.max(n, WINDOW_BYTES), this.remaining);
    if (this.window.length < size) this.window = Buffer.allocUnsafe(size);
    let filled = 0;
    while (filled < size) {
      const got = fs.readSync(this.fd, this.window, filled, size - filled, this.pos + filled);
      if (got === 0) throw invalid(`unexpected end of file at offset ${this.pos + filled}`, this.file);
      filled += got;
    }
    this.windowStart = this.pos;
    return 0;
  }

  bytes(n: number, what: string): Buffer {
    const at = this.need(n, what);
    this.pos += n;
    return this.window.subarray(at, at + n);
  }

  u8(what: string): number {
    const at = this.need(1, what);
    this.pos += 1;
    return this.window[at]!;
  }

  u32(what: string): number {
    const at = this.need(4, what);
    this.pos += 4;
    return this.window.readUInt32LE(at);
  }

  /** A u64 that must be a safe JS integer (counts, lengths, dims, offsets). */
  u64(what: string): number {
    const at = this.need(8, what);
    this.pos += 8;
    const v = this.window.readBigUInt64LE(at);
    if (v > BigInt(GGUF_LIMITS.maxSafeInteger)) throw overLimit(`${what} ${v} is too large`, this.file);
    return Number(v);
  }

  string(maxBytes: number, what: string): string {
    const length = this.u64(`${what} length`);
    if (length > maxBytes) throw overLimit(`${what} is ${length} bytes (limit ${maxBytes})`, this.file);
    const raw = this.bytes(length, what);
    try {
      return utf8.decode(raw);
    } catch {
      throw invalid(`${what} is not valid UTF-8 (offset ${this.pos - length})`, this.file);
    }
  }
}

/** Smallest encoding of one array item, to check a count against the bytes left before allocating. */
function minItemBytes(type: number): number {
  if (type === GgufValueType.STRING) return 8;
  if (type === GgufValueType.ARRAY) return 12;
  return GGUF_VALUE_SIZE[type as GgufValueType] ?? 1;
}

function readTypedItems(cur: FileCursor, type: number, count: number, what: string): GgufArrayItems {
  const size = GGUF_VALUE_SIZE[type as GgufValueType]!;
  // Copy into a fresh, aligned buffer: the window is reused and may be unaligned for the type.
  const raw = new Uint8Array(count * size);
  let done = 0;
  while (done < raw.length) {
    const chunk = Math.min(raw.length - done, WINDOW_BYTES);
    raw.set(cur.bytes(chunk, what), done);
    done += chunk;
  }
  const buf = raw.buffer;
  switch (type) {
    case GgufValueType.UINT8:
      return raw;
    case GgufValueType.INT8:
      return new Int8Array(buf);
    case GgufValueType.UINT16:
      return new Uint16Array(buf);
    case GgufValueType.INT16:
      return new Int16Array(buf);
    case GgufValueType.UINT32:
      return new Uint32Array(buf);
    case GgufValueType.INT32:
      return new Int32Array(buf);
    case GgufValueType.FLOAT32:
      return new Float32Array(buf);
    case GgufValueType.UINT64:
      return new BigUint64Array(buf);
    case GgufValueType.INT64:
      return new BigInt64Array(buf);
    case GgufValueType.FLOAT64:
      return new Float64Array(buf);
    case GgufValueType.BOOL: {
      const out = new Array<boolean>(count);
      for (let i = 0; i < count; i++) {
        if (raw[i]! > 1) throw invalid(`${what}: bool item ${i} is ${raw[i]}, not 0 or 1`, cur.file);
        out[i] = raw[i] === 1;
      }
      return out;
    }
    default:
      throw invalid(`${what}: unknown item type ${type}`, cur.file);
  }
}

function readArray(cur: FileCursor, depth: number, what: string): GgufArray {
  if (depth > GGUF_LIMITS.maxArrayDepth) throw overLimit(`${what}: arrays nested deeper than ${GGUF_LIMITS.maxArrayDepth}`, cur.file);
  const itemType = cur.u32(`${what} item type`);
  const count = cur.u64(`${what} count`);
  if (count > GGUF_LIMITS.maxArrayItems) throw overLimit(`${what} has ${count} items (limit ${GGUF_LIMITS.maxArrayItems})`, cur.file);
  if (itemType > GgufValueType.FLOAT64) throw invalid(`${what}: unknown item type ${itemType}`, cur.file);
  if (count * minItemBytes(itemType) > cur.remaining) {
    throw invalid(`${what} claims ${count} items, more than the file holds`, cur.file);
  }
  if (itemType === GgufValueType.STRING) {
    const items = new Array<string>(count);
    for (let i = 0; i < count; i++) items[i] = cur.string(GGUF_LIMITS.maxStringBytes, `${what}[${i}]`);
    return { itemType, items };
  }
  if (itemType === GgufValueType.ARRAY) {
    const items = new Array<GgufArray>(count);
    for (let i = 0; i < count; i++) items[i] = readArray(cur, depth + 1, `${what}[${i}]`);
    return { itemType, items };
  }
  return { itemType: itemType as GgufValueType, items: readTypedItems(cur, itemType, count, what) };
}

function readValue(cur: FileCursor, type: number, what: string): GgufValue {
  switch (type) {
    case GgufValueType.UINT8:
      return cur.u8(what);
    case GgufValueType.INT8:
      return cur.bytes(1, what).readInt8(0);
    case GgufValueType.UINT16:
      return cur.bytes(2, what).readUInt16LE(0);
    case GgufValueType.INT16:
      return cur.bytes(2, what).readInt16LE(0);
    case GgufValueType.UINT32:
      return cur.u32(what);
    case GgufValueType.INT32:
      return cur.bytes(4, what).readInt32LE(0);
    case GgufValueType.FLOAT32:
      return cur.bytes(4, what).readFloatLE(0);
    case GgufValueType.BOOL: {
      const b = cur.u8(what);
      if (b > 1) throw invalid(`${what}: bool is ${b}, not 0 or 1`, cur.file);
      return b === 1;
    }
    case GgufValueType.STRING:
      return cur.string(GGUF_LIMITS.maxStringBytes, what);
    case GgufValueType.ARRAY:
      return readArray(cur, 1, what);
    case GgufValueType.UINT64:
      return cur.bytes(8, what).readBigUInt64LE(0);
    case GgufValueType.INT64:
      return cur.bytes(8, what).readBigInt64LE(0);
    case GgufValueType.FLOAT64:
      return cur.bytes(8, what).readDoubleLE(0);
    default:
      throw invalid(`${what} has unknown value type ${type}`, cur.file);
  }
}

function parseHeader(fd: number, file: string): GgufHeader {
  const fileSize = fs.fstatSync(fd).size;
  const cur = new FileCursor(fd, fileSize, file);
  if (fileSize < 24) throw invalid(`${fileSize} bytes is too short for a GGUF header`, file);
  const magic = cur.u32('magic');
  if (magic !== GGUF_MAGIC) throw invalid('missing "GGUF" magic', file);
  const version = cur.u32('version');
  if (version === 1) {
    throw new XglmError('ERR_XGLM_UNSUPPORTED', `${file}: GGUF version 1 is not supported`, { hint: 're-convert the model' });
  }
  if (version !== 2 && version !== 3) {
    const swapped = ((version & 0xff) << 24) | ((version & 0xff00) << 8) | ((version >>> 8) & 0xff00) | (version >>> 24);
    const why = swapped === 2 || swapped === 3 ? 'big-endian GGUF is not supported' : `unknown version ${version}`;
    throw new XglmError('ERR_XGLM_UNSUPPORTED', `${file}: ${why}`, { hint: 'convert the model again with this package' });
  }
  const nTensors = cur.u64('tensor count');
  const nKv = cur.u64('metadata count');
  if (nTensors > GGUF_LIMITS.maxTensorCount) throw overLimit(`has ${nTensors} tensors (limit ${GGUF_LIMITS.maxTensorCount})`, file);
  if (nKv > GGUF_LIMITS.maxKvCount) throw overLimit(`has ${nKv} metadata pairs (limit ${GGUF_LIMITS.maxKvCount})`, file);
  // Smallest kv: 8-byte length, 1-byte key, 4-byte type, 1-byte value. Smallest tensor info: 25 bytes.
  if (nKv * 14 + nTensors * 25 > cur.remaining) throw invalid(`claims ${nKv} pairs and ${nTensors} tensors, more than the file holds`, file);

  const kv: GgufKv[] = [];
  const keys = new Set<string>();
  for (let i = 0; i < nKv; i++) {
    const key = cur.string(GGUF_LIMITS.maxKeyBytes, `key ${i}`);
    if (key.length === 0) throw invalid(`key ${i} is empty`, file);
    if (keys.has(key)) throw invalid(`duplicate key "${key}"`, file);
    keys.add(key);
    const type = cur.u32(`type of "${key}"`);
    const value = readValue(cur, type, `"${key}"`);
    kv.push({ key, type: type as GgufValueType, value });
  }

  let alignment = GGUF_DEFAULT_ALIGNMENT;
  const alignKv = kv.find((e) => e.key === GGUF_KEY_ALIGNMENT);
  if (alignKv) {
    if (alignKv.type !== GgufValueType.UINT32) throw invalid(`${GGUF_KEY_ALIGNMENT} is ${ggufValueTypeName(alignKv.type)}, not uint32`, file);
    alignment = alignKv.value as number;
    if (alignment === 0 || (alignment & (alignment - 1)) !== 0 || alignment > GGUF_LIMITS.maxAlignment) {
      throw invalid(`${GGUF_KEY_ALIGNMENT} ${alignment} is not a power of two up to ${GGUF_LIMITS.maxAlignment}`, file);
    }
  }

  const tensors: GgufTensorInfo[] = [];
  const names = new Set<string>();
  for (let i = 0; i < nTensors; i++) {
    const name = cur.string(GGUF_LIMITS.maxTensorNameBytes, `tensor ${i} name`);
    if (names.has(name)) throw invalid(`duplicate tensor "${name}"`, file);
    names.add(name);
    const nDims = cur.u32(`"${name}" dimension count`);
    if (nDims > GGUF_LIMITS.maxDims) throw overLimit(`tensor "${name}" has ${nDims} dimensions (limit ${GGUF_LIMITS.maxDims})`, file);
    const dims: number[] = [];
    let elements = 1;
    for (let d = 0; d < nDims; d++) {
      const n = cur.u64(`"${name}" dimension ${d}`);
      dims.push(n);
      elements *= n;
      if (elements > GGUF_LIMITS.maxSafeInteger) throw overLimit(`tensor "${name}" has too many elements`, file);
    }
    const type = cur.u32(`"${name}" type`);
    if (!GGML_TYPE_TRAITS.has(type)) throw invalid(`tensor "${name}" has unknown ggml type ${type}`, file);
    const byteLength = ggmlTensorBytes(type, dims);
    if (byteLength === undefined) {
      throw invalid(`tensor "${name}" rows of ${dims[0]} do not fit ${ggmlTypeName(type)} blocks of ${GGML_TYPE_TRAITS.get(type)!.blockSize}`, file);
    }
    const offset = cur.u64(`"${name}" offset`);
    if (offset % alignment !== 0) throw invalid(`tensor "${name}" offset ${offset} is not a multiple of the alignment ${alignment}`, file);
    tensors.push({ name, dims, type, offset, byteLength });
  }

  const headerEnd = cur.pos;
  const dataOffset = nTensors > 0 ? Math.ceil(headerEnd / alignment) * alignment : headerEnd;
  for (const t of tensors) {
    if (dataOffset + t.offset + t.byteLength > fileSize) {
      throw invalid(`tensor "${t.name}" (${t.byteLength} bytes at data offset ${t.offset}) runs past the end of the file`, file);
    }
  }
  return { version, alignment, kv, tensors, dataOffset, headerEnd, fileSize };
}

/** An open GGUF file: the parsed header, and tensor data read on demand. */
export class GgufReader {
  readonly header: GgufHeader;
  private fd: number | undefined;
  private readonly kvByKey: Map<string, GgufKv>;
  private readonly tensorByName: Map<string, GgufTensorInfo>;

  private constructor(
    readonly file: string,
    fd: number,
  ) {
    this.fd = fd;
    this.header = parseHeader(fd, file);
    this.kvByKey = new Map(this.header.kv.map((e) => [e.key, e]));
    this.tensorByName = new Map(this.header.tensors.map((t) => [t.name, t]));
  }

  /**
   * Opens and parses a GGUF file; call close() when done.
   * @throws XglmError ERR_XGLM_GGUF_INVALID, ERR_XGLM_GGUF_LIMIT or ERR_XGLM_UNSUPPORTED.
   */
  static open(file: string): GgufReader {
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch (cause) {
      throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `cannot open ${file}: ${(cause as Error).message}`, { cause });
    }
    try {
      return new GgufReader(file, fd);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  get kv(): GgufKv[] {
    return this.header.kv;
  }

  get tensors(): GgufTensorInfo[] {
    return this.header.tensors;
  }

  /** The value of `key`, or undefined. */
  get(key: string): GgufValue | undefined {
    return this.kvByKey.get(key)?.value;
  }

  getKv(key: string): GgufKv | undefined {
    return this.kvByKey.get(key);
  }

  tensor(name: string): GgufTensorInfo | undefined {
    return this.tensorByName.get(name);
  }

  /** Reads `length` bytes of a tensor's data starting `start` bytes into it. */
  readTensorBytes(tensor: GgufTensorInfo, start = 0, length = tensor.byteLength - start): Buffer {
    if (this.fd === undefined) throw new XglmError('ERR_XGLM_DISPOSED', `${this.file} is closed`);
    if (start < 0 || length < 0 || start + length > tensor.byteLength) {
      throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `range ${start}+${length} is outside tensor "${tensor.name}"`);
    }
    const out = Buffer.allocUnsafe(length);
    const base = this.header.dataOffset + tensor.offset + start;
    let done = 0;
    while (done < length) {
      const got = fs.readSync(this.fd, out, done, length - done, base + done);
      if (got === 0) throw invalid(`tensor "${tensor.name}" is truncated`, this.file);
      done += got;
    }
    return out;
  }

  close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
  }
}

/** Reads only the header of a GGUF file (metadata and tensor infos). */
export function readGgufHeader(file: string): GgufHeader {
  const reader = GgufReader.open(file);
  try {
    return reader.header;
  } finally {
    reader.close();
  }
}

/**
 * A deliberately naive GGUF codec for the fuzzer: it splits a valid file into metadata
 * records (key, type, raw value bytes), tensor infos and the data section, lets mutations
 * edit that model freely (duplicates, wrong types, bad offsets — anything the project's
 * writer would refuse to write), and encodes it back while recording where every field is.
 */
import { type Field, type Rng, type Structured, INTERESTING_U64 } from './mutate.js';

export interface RawKv {
  key: string;
  type: number;
  /** The encoded value, exactly as it follows the type tag. */
  value: Uint8Array;
}

export interface RawTensor {
  name: string;
  dims: bigint[];
  type: number;
  offset: bigint;
}

export interface RawGguf {
  version: number;
  kv: RawKv[];
  tensors: RawTensor[];
  alignment: number;
  data: Uint8Array;
  /** Counts written in the header; undefined = the real ones. */
  kvCount?: bigint;
  tensorCount?: bigint;
}

const SCALAR_BYTES: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
const STRING = 8;
const ARRAY = 9;

function valueLength(b: Buffer, at: number, type: number): number {
  if (type in SCALAR_BYTES) return SCALAR_BYTES[type]!;
  if (type === STRING) return 8 + Number(b.readBigUInt64LE(at));
  if (type === ARRAY) {
    const itemType = b.readUInt32LE(at);
    const n = Number(b.readBigUInt64LE(at + 4));
    let p = at + 12;
    for (let i = 0; i < n; i++) p += valueLength(b, p, itemType);
    return p - at;
  }
  throw new Error(`seed GGUF has value type ${type}`);
}

/** Parses a valid GGUF (a seed made by the converter). */
export function decodeGguf(bytes: Uint8Array): RawGguf {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = b.readUInt32LE(4);
  const nTensors = Number(b.readBigUInt64LE(8));
  const nKv = Number(b.readBigUInt64LE(16));
  let p = 24;
  const str = (): string => {
    const n = Number(b.readBigUInt64LE(p));
    const s = b.toString('utf8', p + 8, p + 8 + n);
    p += 8 + n;
    return s;
  };
  const kv: RawKv[] = [];
  let alignment = 32;
  for (let i = 0; i < nKv; i++) {
    const key = str();
    const type = b.readUInt32LE(p);
    p += 4;
    const len = valueLength(b, p, type);
    kv.push({ key, type, value: bytes.slice(p, p + len) });
    if (key === 'general.alignment') alignment = b.readUInt32LE(p);
    p += len;
  }
  const tensors: RawTensor[] = [];
  for (let i = 0; i < nTensors; i++) {
    const name = str();
    const nd = b.readUInt32LE(p);
    p += 4;
    const dims: bigint[] = [];
    for (let d = 0; d < nd; d++, p += 8) dims.push(b.readBigUInt64LE(p));
    const type = b.readUInt32LE(p);
    const offset = b.readBigUInt64LE(p + 4);
    p += 12;
    tensors.push({ name, dims, type, offset });
  }
  const dataOffset = Math.ceil(p / alignment) * alignment;
  return { version, kv, tensors, alignment, data: bytes.slice(dataOffset) };
}

class Encoder {
  private chunks: Buffer[] = [];
  length = 0;
  readonly fields: Field[] = [];
  readonly boundaries: number[] = [];

  mark(): void {
    this.boundaries.push(this.length);
  }

  raw(data: Uint8Array, kind?: Field['kind']): void {
    if (kind) this.fields.push({ offset: this.length, size: data.length, kind });
    this.chunks.push(Buffer.from(data));
    this.length += data.length;
  }

  u32(v: number, kind: Field['kind']): void {
    const x = Buffer.alloc(4);
    x.writeUInt32LE(v >>> 0);
    this.fields.push({ offset: this.length, size: 4, kind });
    this.raw(x);
  }

  u64(v: bigint, kind: Field['kind']): void {
    const x = Buffer.alloc(8);
    x.writeBigUInt64LE(BigInt.asUintN(64, v));
    this.fields.push({ offset: this.length, size: 8, kind });
    this.raw(x);
  }

  string(s: string): void {
    const data = Buffer.from(s, 'utf8');
    this.u64(BigInt(data.length), 'length');
    this.raw(data);
  }

  bytes(): Uint8Array {
    return Buffer.concat(this.chunks);
  }
}

/** Records the fields inside an encoded value (array counts, string lengths) at `base`. */
function valueFields(value: Uint8Array, type: number, base: number, fields: Field[], boundaries: number[]): void {
  const b = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  if (type === STRING) {
    fields.push({ offset: base, size: 8, kind: 'length' });
  } else if (type === ARRAY && value.length >= 12) {
    fields.push({ offset: base, size: 4, kind: 'type' });
    fields.push({ offset: base + 4, size: 8, kind: 'count' });
    const itemType = b.readUInt32LE(0);
    const n = Number(b.readBigUInt64LE(4));
    // a few item lengths of string arrays (a vocabulary has thousands: sample them)
    if (itemType === STRING) {
      let p = 12;
      // a mutated value may lie about its count: stop where the bytes end
      for (let i = 0; i < n && p + 8 <= value.length; i++) {
        if (i < 4 || i === n - 1 || i % 97 === 0) {
          fields.push({ offset: base + p, size: 8, kind: 'length' });
          boundaries.push(base + p);
        }
        p += 8 + Number(b.readBigUInt64LE(p));
      }
    }
  } else {
    fields.push({ offset: base, size: SCALAR_BYTES[type] ?? 1, kind: 'value' });
  }
}

export function encodeGguf(g: RawGguf): Structured & { headerEnd: number } {
  const e = new Encoder();
  e.raw(Buffer.from('GGUF'));
  e.u32(g.version, 'tag');
  e.u64(g.tensorCount ?? BigInt(g.tensors.length), 'count');
  e.u64(g.kvCount ?? BigInt(g.kv.length), 'count');
  for (const kv of g.kv) {
    e.mark();
    e.string(kv.key);
    e.u32(kv.type, 'type');
    e.mark();
    const at = e.length;
    e.raw(kv.value);
    valueFields(kv.value, kv.type, at, e.fields, e.boundaries);
  }
  for (const t of g.tensors) {
    e.mark();
    e.string(t.name);
    e.u32(t.dims.length, 'count');
    for (const d of t.dims) e.u64(d, 'dim');
    e.u32(t.type, 'type');
    e.u64(t.offset, 'offset');
  }
  const headerEnd = e.length;
  e.mark();
  const pad = (g.alignment - (e.length % g.alignment)) % g.alignment;
  e.raw(new Uint8Array(pad));
  const dataStart = e.length;
  e.mark();
  e.raw(g.data);
  // tensor data ends are truncation points too
  for (const t of g.tensors) e.boundaries.push(dataStart + Number(t.offset));
  e.boundaries.push(e.length);
  return { bytes: e.bytes(), fields: e.fields, boundaries: e.boundaries, headerEnd };
}

function u32Value(v: number): Uint8Array {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return b;
}

function stringValue(s: string): Uint8Array {
  const data = Buffer.from(s, 'utf8');
  const b = Buffer.alloc(8 + data.length);
  b.writeBigUInt64LE(BigInt(data.length));
  data.copy(b, 8);
  return b;
}

/** A value of a random type, to put where another type is expected. */
function wrongValue(rng: Rng): { type: number; value: Uint8Array } {
  switch (rng.int(6)) {
    case 0:
      return { type: STRING, value: stringValue(rng.pick(['', 'xglm', 'llama', '\u2581', 'x'.repeat(300)])) };
    case 1: {
      const b = Buffer.alloc(8);
      b.writeDoubleLE(rng.pick([NaN, Infinity, -1, 0, 1e308, 0.5]));
      return { type: 12, value: b };
    }
    case 2: {
      const b = Buffer.alloc(4);
      b.writeFloatLE(rng.pick([NaN, -Infinity, -0, 1e-30, 3.4e38]));
      return { type: 6, value: b };
    }
    case 3: {
      // an array of a random item type and count (the count may lie)
      const itemType = rng.pick([0, 4, 5, 6, 7, 8, 9, 10]);
      const n = rng.int(4);
      const items = itemType === STRING ? Buffer.concat(Array.from({ length: n }, () => stringValue('a'))) : Buffer.alloc(n * (SCALAR_BYTES[itemType] ?? 12));
      const head = Buffer.alloc(12);
      head.writeUInt32LE(itemType);
      head.writeBigUInt64LE(rng.chance(0.8) ? BigInt(n) : rng.pick(INTERESTING_U64), 4);
      return { type: ARRAY, value: Buffer.concat([head, items]) };
    }
    case 4: {
      const b = Buffer.alloc(8);
      b.writeBigUInt64LE(rng.pick(INTERESTING_U64));
      return { type: rng.pick([10, 11]), value: b };
    }
    default:
      return { type: rng.pick([0, 1, 2, 3, 4, 5, 7]), value: u32Value(rng.pick([0, 1, 0xffffffff, 0x7fffffff, 2048])).subarray(0, 1 + rng.int(4)) };
  }
}

/** One semantic mutation of a decoded GGUF: the file stays well-formed at the byte level more often. */
export function mutateGgufModel(rng: Rng, seed: RawGguf): RawGguf {
  const g: RawGguf = { ...seed, kv: seed.kv.map((k) => ({ ...k })), tensors: seed.tensors.map((t) => ({ ...t, dims: [...t.dims] })) };
  const t = g.tensors.length ? rng.pick(g.tensors) : undefined;
  switch (rng.int(14)) {
    case 0: // duplicate key
      g.kv.splice(rng.int(g.kv.length + 1), 0, { ...rng.pick(g.kv) });
      break;
    case 1: // duplicate tensor
      if (t) g.tensors.splice(rng.int(g.tensors.length + 1), 0, { ...t, dims: [...t.dims], offset: rng.chance(0.5) ? t.offset : BigInt(g.data.length) });
      break;
    case 2: // a key of the wrong type
      Object.assign(rng.pick(g.kv), wrongValue(rng));
      break;
    case 3: // misaligned or out-of-file offset
      if (t) t.offset = rng.pick([t.offset + BigInt(1 + rng.int(31)), BigInt(g.data.length), BigInt(g.data.length) - 32n, t.offset + (1n << 40n), -32n, rng.pick(INTERESTING_U64)]);
      break;
    case 4: // wrong ggml type
      if (t) t.type = rng.pick([rng.int(42), 0xffffffff, 4, 5, 6, 15, 16, 17, 30, 31]);
      break;
    case 5: // wrong dims: huge, zero, extra, missing
      if (t) {
        const d = rng.int(Math.max(1, t.dims.length));
        const what = rng.int(5);
        if (what === 0) t.dims[d] = rng.pick(INTERESTING_U64);
        else if (what === 1) t.dims[d] = 0n;
        else if (what === 2) t.dims.push(BigInt(1 + rng.int(3)));
        else if (what === 3) t.dims.pop();
        else t.dims = Array.from({ length: rng.pick([5, 8, 100]) }, () => 1n);
      }
      break;
    case 6: // drop a key or a tensor
      if (rng.chance(0.5)) g.kv.splice(rng.int(g.kv.length), 1);
      else if (t) g.tensors.splice(g.tensors.indexOf(t), 1);
      break;
    case 7: // hyperparameters with hostile values
      for (const k of g.kv) {
        if (k.key.startsWith('xglm.') && rng.chance(0.4)) {
          k.type = 4;
          k.value = u32Value(rng.pick([0, 1, 3, 7, 0x7fffffff, 0xffffffff, 1 << 20, (1 << 20) + 1, 65536, 1024, 100000]));
        }
      }
      break;
    case 8: // alignment
      g.kv.push({ key: 'general.alignment', ...(rng.chance(0.7) ? { type: 4, value: u32Value(rng.pick([0, 1, 3, 8, 48, 64, 1 << 20, 1 << 30, 0xffffffff])) } : wrongValue(rng)) });
      break;
    case 9: // data section shorter or longer
      g.data = rng.chance(0.7) ? g.data.slice(0, rng.int(g.data.length)) : Buffer.concat([g.data, Buffer.alloc(rng.int(4096))]);
      break;
    case 10: // overlapping tensors
      if (g.tensors.length > 1) rng.pick(g.tensors).offset = rng.pick(g.tensors).offset;
      break;
    case 11: // counts that lie
      if (rng.chance(0.5)) g.kvCount = BigInt(g.kv.length) + rng.pick([1n, -1n, 1n << 32n, 0xffffffffffffffffn]);
      else g.tensorCount = BigInt(g.tensors.length) + rng.pick([1n, -1n, 1n << 32n, 0xffffffffffffffffn]);
      break;
    case 12: // names: empty, long, duplicate of another tensor's, not UTF-8
      if (t) t.name = rng.pick(['', 'x'.repeat(64), 'x'.repeat(63), rng.pick(g.tensors).name, 'blk.0.attn_qkv.weight', 'blk.99.ffn_up.weight', '\udc80']);
      break;
    default: // version
      g.version = rng.pick([0, 1, 2, 4, 0x03000000, 0xffffffff]);
  }
  return g;
}

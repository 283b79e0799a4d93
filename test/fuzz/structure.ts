/**
 * Structure of the non-GGUF inputs, for the mutators: where the fields of a stored zip,
 * a pickle, a protobuf and a safetensors header are, plus format-specific hostile edits
 * (forbidden pickle globals, lying varints, JSON values of the wrong type).
 */
import zlib from 'node:zlib';
import { type Field, type Rng, type Structured, INTERESTING_U64, concat } from './mutate.js';

// --- zip (stored entries, as torch.save writes them) ---

export interface ZipFile {
  name: string;
  data: Uint8Array;
}

/** Reads the entries of a stored (uncompressed) zip made by torch.save or our writer. */
export function readStoredZip(bytes: Uint8Array): ZipFile[] {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let end = b.length - 22;
  while (end >= 0 && b.readUInt32LE(end) !== 0x06054b50) end--;
  const count = b.readUInt16LE(end + 10);
  let p = b.readUInt32LE(end + 16);
  const out: ZipFile[] = [];
  for (let i = 0; i < count; i++) {
    const csize = b.readUInt32LE(p + 20);
    const nameLen = b.readUInt16LE(p + 28);
    const extra = b.readUInt16LE(p + 30);
    const comment = b.readUInt16LE(p + 32);
    const local = b.readUInt32LE(p + 42);
    const name = b.toString('utf8', p + 46, p + 46 + nameLen);
    const dataAt = local + 30 + b.readUInt16LE(local + 26) + b.readUInt16LE(local + 28);
    out.push({ name, data: bytes.slice(dataAt, dataAt + csize) });
    p += 46 + nameLen + extra + comment;
  }
  return out;
}

/** Writes stored entries with correct CRCs, recording every header field. */
export function writeStoredZip(files: ZipFile[]): Structured {
  const parts: Uint8Array[] = [];
  const fields: Field[] = [];
  const boundaries: number[] = [];
  let at = 0;
  const push = (b: Uint8Array) => {
    parts.push(b);
    at += b.length;
  };
  const header = (size: number, layout: Array<[number, number, Field['kind'], number]>) => {
    const h = Buffer.alloc(size);
    for (const [off, width, kind, value] of layout) {
      if (width === 2) h.writeUInt16LE(value, off);
      else h.writeUInt32LE(value >>> 0, off);
      fields.push({ offset: at + off, size: width, kind });
    }
    return h;
  };
  const locals: number[] = [];
  for (const f of files) {
    boundaries.push(at);
    locals.push(at);
    const name = Buffer.from(f.name, 'utf8');
    const crc = zlib.crc32(f.data);
    push(header(30, [[0, 4, 'tag', 0x04034b50], [8, 2, 'type', 0], [14, 4, 'value', crc], [18, 4, 'length', f.data.length], [22, 4, 'length', f.data.length], [26, 2, 'length', name.length], [28, 2, 'length', 0]]));
    push(name);
    boundaries.push(at);
    push(f.data);
  }
  const dirStart = at;
  files.forEach((f, i) => {
    boundaries.push(at);
    const name = Buffer.from(f.name, 'utf8');
    push(
      header(46, [
        [0, 4, 'tag', 0x02014b50], [10, 2, 'type', 0], [16, 4, 'value', zlib.crc32(f.data)], [20, 4, 'length', f.data.length],
        [24, 4, 'length', f.data.length], [28, 2, 'length', name.length], [30, 2, 'length', 0], [32, 2, 'length', 0], [42, 4, 'offset', locals[i]!],
      ]),
    );
    fields.push({ offset: at, size: name.length, kind: 'value' });
    push(name);
  });
  boundaries.push(at);
  push(header(22, [[0, 4, 'tag', 0x06054b50], [8, 2, 'count', files.length], [10, 2, 'count', files.length], [12, 4, 'length', at - dirStart], [16, 4, 'offset', dirStart], [20, 2, 'length', 0]]));
  boundaries.push(at);
  return { bytes: concat(parts), fields, boundaries };
}

// --- pickle ---

const PICKLE_ARG: Record<number, number> = {
  0x80: 1, 0x95: 8, 0x4a: 4, 0x4b: 1, 0x4d: 2, 0x71: 1, 0x72: 4, 0x68: 1, 0x6a: 4, 0x47: 8, 0x82: 1, 0x83: 2, 0x84: 4,
};
/** Opcodes followed by a length of this many bytes, then that many bytes. */
const PICKLE_LEN: Record<number, number> = { 0x58: 4, 0x8c: 1, 0x8d: 8, 0x42: 4, 0x43: 1, 0x8e: 8, 0x55: 1, 0x54: 4, 0x8a: 1, 0x8b: 4, 0x96: 8 };
/** Opcodes with newline-terminated arguments (how many lines). */
const PICKLE_LINES: Record<number, number> = { 0x63: 2, 0x69: 2, 0x49: 1, 0x4c: 1, 0x53: 1, 0x56: 1, 0x70: 1, 0x67: 1, 0x50: 1, 0x46: 1 };

/** Opcode boundaries and argument fields of a pickle (stops at anything it does not know). */
export function scanPickle(bytes: Uint8Array): Structured {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const fields: Field[] = [];
  const boundaries: number[] = [];
  let p = 0;
  while (p < b.length) {
    boundaries.push(p);
    const op = b[p]!;
    fields.push({ offset: p, size: 1, kind: 'tag' });
    p++;
    if (op in PICKLE_ARG) {
      fields.push({ offset: p, size: PICKLE_ARG[op]!, kind: op === 0x71 || op === 0x72 || op === 0x68 || op === 0x6a ? 'offset' : 'value' });
      p += PICKLE_ARG[op]!;
    } else if (op in PICKLE_LEN) {
      const w = PICKLE_LEN[op]!;
      fields.push({ offset: p, size: w, kind: 'length' });
      const n = Number(w === 1 ? b[p] : w === 4 ? b.readUInt32LE(p) : b.readBigUInt64LE(p));
      p += w + n;
    } else if (op in PICKLE_LINES) {
      for (let l = 0; l < PICKLE_LINES[op]!; l++) {
        const nl = b.indexOf(0x0a, p);
        p = nl < 0 ? b.length : nl + 1;
      }
    }
  }
  boundaries.push(b.length);
  return { bytes, fields, boundaries };
}

const HOSTILE_PICKLE_SNIPPETS: readonly string[] = [
  "cos\nsystem\n(S'echo pwned'\ntR.",
  'cbuiltins\neval\n(Vprint(1)\ntR',
  'c__builtin__\nexec\n(Vx=1\ntR',
  'csubprocess\nPopen\n(]Vid\natR',
  'ctorch\nload\n)R',
  'cnumpy.core.multiarray\n_reconstruct\n)R',
  '\x8c\x02os\x8c\x06system\x93',
  'ios\nsystem\n(Vid\n',
  '(cos\nsystem\nVid\no',
  'ctorch._utils\n_rebuild_tensor_v2\n}b',
  'ctorch._utils\n_rebuild_parameter\n)\x81',
  '\x82\x01',
  'j\xff\xff\xff\x7f',
  'r\xff\xff\xff\xff',
  'h\x00',
  '0000000000',
  '.',
  'X\xff\xff\xff\xffabc',
  '\x8a\xff' + '\xff'.repeat(8),
  '\x8b\xff\xff\xff\x7f',
  'Q',
  'ctorch\nFloatStorage\nVbad\nV/etc/passwd\nI-1\n',
];

export function mutatePickle(rng: Rng, s: Structured): Uint8Array | undefined {
  const at = rng.pick(s.boundaries);
  switch (rng.int(4)) {
    case 0: {
      const snippet = Buffer.from(rng.pick(HOSTILE_PICKLE_SNIPPETS), 'latin1');
      return concat([s.bytes.subarray(0, at), snippet, s.bytes.subarray(at)]);
    }
    case 1: {
      // deep nesting or a flood of marks / empty containers
      const op = rng.pick(['(', ']', '}', ')', '(]']);
      const n = rng.chance(0.98) ? rng.pick([1000, 20_000]) : 1_100_000; // past PICKLE_LIMITS now and then
      return concat([s.bytes.subarray(0, at), Buffer.from(op.repeat(n), 'latin1'), s.bytes.subarray(at)]);
    }
    case 2: {
      // a huge list built by APPENDS of one memoized object (the pickle stays small)
      const loop = Buffer.from(']q\x00(' + 'h\x00'.repeat(rng.chance(0.9) ? 10 : 100_000) + 'e', 'latin1');
      return concat([s.bytes.subarray(0, at), loop, s.bytes.subarray(at)]);
    }
    default:
      return undefined;
  }
}

// --- protobuf (sentencepiece ModelProto) ---

export interface ProtoField {
  start: number;
  /** Start of the payload (after tag and length). */
  payload: number;
  end: number;
  field: number;
  wire: number;
}

function readVarint(b: Uint8Array, p: number): [number, number] {
  let v = 0;
  let mul = 1;
  for (let i = 0; i < 10; i++) {
    const x = b[p + i]!;
    v += (x & 0x7f) * mul;
    mul *= 128;
    if (x < 0x80) return [v, p + i + 1];
  }
  throw new Error('bad varint in seed');
}

/** Top-level fields and, for length-delimited ones, their own fields (one level down). */
export function scanProto(b: Uint8Array, start = 0, end = b.length, depth = 0): ProtoField[] {
  const out: ProtoField[] = [];
  let p = start;
  while (p < end) {
    const s = p;
    const [key, q] = readVarint(b, p);
    const wire = key & 7;
    let payload = q;
    if (wire === 0) p = readVarint(b, q)[1];
    else if (wire === 1) p = q + 8;
    else if (wire === 5) p = q + 4;
    else if (wire === 2) {
      const [n, r] = readVarint(b, q);
      payload = r;
      p = r + n;
    } else throw new Error(`wire type ${wire} in seed`);
    out.push({ start: s, payload, end: p, field: Math.floor(key / 8), wire });
    if (wire === 2 && depth === 0) out.push(...scanProto(b, payload, p, 1));
  }
  return out;
}

export function varint(v: bigint): Uint8Array {
  const out: number[] = [];
  let x = BigInt.asUintN(64, v);
  while (x > 0x7fn) {
    out.push(Number(x & 0x7fn) | 0x80);
    x >>= 7n;
  }
  out.push(Number(x));
  return Uint8Array.from(out);
}

/** One hostile edit of a protobuf: lying lengths, wrong wire types, duplicated or missing fields. */
export function mutateProto(rng: Rng, b: Uint8Array, fields: ProtoField[]): Uint8Array {
  const f = rng.pick(fields);
  const [, afterKey] = readVarint(b, f.start);
  switch (rng.int(7)) {
    case 0: // truncate at a field edge
      return b.slice(0, rng.pick([f.start, f.payload, f.end, afterKey]));
    case 1: {
      // a length that lies
      if (f.wire !== 2) return b.slice(0, f.end - 1);
      const n = rng.pick([0n, 1n, BigInt(f.end - f.payload + 1), BigInt(b.length), 0x7fffffffn, 0xffffffffn, 1n << 53n, 0xffffffffffffffffn]);
      return concat([b.subarray(0, afterKey), varint(n), b.subarray(f.payload)]);
    }
    case 2: {
      // the same field number with another wire type
      const wire = rng.pick([0, 1, 2, 3, 4, 5, 6, 7].filter((w) => w !== f.wire));
      return concat([b.subarray(0, f.start), varint(BigInt(f.field * 8 + wire)), b.subarray(afterKey)]);
    }
    case 3: // duplicate the field
      return concat([b.subarray(0, f.end), b.subarray(f.start, f.end), b.subarray(f.end)]);
    case 4: // drop it
      return concat([b.subarray(0, f.start), b.subarray(f.end)]);
    case 5: {
      // overwrite payload bytes (charsmaps, floats, strings, enums)
      const out = new Uint8Array(b);
      const len = f.end - f.payload;
      for (let k = 0; k < 1 + rng.int(8) && len > 0; k++) out[f.payload + rng.int(len)] = rng.pick([0, 0xff, 0x80, rng.int(256)]);
      return out;
    }
    default: {
      // a varint that never ends, or a value of 10 bytes
      const v = rng.chance(0.5) ? Uint8Array.from(Array(11).fill(0xff)) : varint(rng.pick(INTERESTING_U64));
      return concat([b.subarray(0, f.payload), v, b.subarray(f.wire === 0 ? f.end : f.payload)]);
    }
  }
}

// --- JSON (tokenizer.json, safetensors headers) ---

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Paths to nodes of a JSON value (sampled inside long arrays). */
export function jsonPaths(v: Json, path: Array<string | number> = [], out: Array<Array<string | number>> = []): Array<Array<string | number>> {
  out.push(path);
  if (Array.isArray(v)) {
    v.forEach((x, i) => {
      if (i < 8 || i === v.length - 1 || i % 211 === 0) jsonPaths(x, [...path, i], out);
    });
  } else if (v !== null && typeof v === 'object') {
    for (const k of Object.keys(v)) jsonPaths(v[k]!, [...path, k], out);
  }
  return out;
}

function hostileJson(rng: Rng, original: Json): Json {
  const deep = (n: number): Json => {
    let x: Json = [];
    for (let i = 0; i < n; i++) x = [x];
    return x;
  };
  return rng.pick<() => Json>([
    () => null,
    () => -1,
    () => 0,
    () => 1.5,
    () => 1e308,
    () => -1e308,
    () => 2 ** 53 + 2,
    () => 2 ** 64,
    () => 0xffffffff,
    () => '',
    () => 'x'.repeat(rng.pick([1, 100, 70000])),
    () => '\u0000\ud800',
    () => [],
    () => ({}),
    () => [original, original],
    () => deep(rng.pick([10, 3000])),
    () => (typeof original === 'number' ? -original : typeof original === 'string' ? original + original : original),
    () => true,
    () => Array.from({ length: rng.pick([9, 100]) }, () => rng.int(1000)),
  ])();
}

/** Replaces, removes or duplicates a node of a parsed JSON document. */
export function mutateJson(rng: Rng, root: Json, paths: Array<Array<string | number>>): Json {
  const copy = structuredClone(root) as Json;
  const path = rng.pick(paths.filter((p) => p.length > 0));
  if (!path) return hostileJson(rng, copy);
  let parent: Json = copy;
  for (const k of path.slice(0, -1)) parent = (parent as Record<string | number, Json>)[k]!;
  const last = path[path.length - 1]!;
  const container = parent as Record<string | number, Json>;
  const op = rng.int(6);
  if (op === 0 && Array.isArray(parent)) parent.splice(last as number, 1);
  else if (op === 0) delete container[last];
  else if (op === 1 && Array.isArray(parent)) parent.splice(last as number, 0, structuredClone(parent[last as number]!));
  else container[last] = hostileJson(rng, container[last]!);
  return copy;
}

/** Text-level edits JSON.parse would not produce: duplicate keys, cut text, stray bytes. */
export function mutateJsonText(rng: Rng, text: string): string {
  switch (rng.int(4)) {
    case 0:
      return text.slice(0, rng.int(text.length));
    case 1: {
      // repeat a `"key": value` member right after itself (a duplicate key)
      const at = text.indexOf('"', rng.int(text.length));
      if (at < 0) return text;
      const close = text.indexOf(',', at);
      return close < 0 ? text : text.slice(0, close + 1) + text.slice(at, close + 1) + text.slice(close + 1);
    }
    case 2: {
      const at = rng.int(text.length);
      return text.slice(0, at) + rng.pick(['\u0000', '\ufffd', '"', '{', ']', '\\u0000', '9'.repeat(400), '-']) + text.slice(at);
    }
    default:
      return text.replace(/[0-9]+/, () => rng.pick(['-1', '1e999', '99999999999999999999', '0.5', 'NaN']));
  }
}

/**
 * Byte-level mutation primitives shared by every fuzzed format: a seeded generator (a case is
 * reproducible from its format and index alone), and mutations that use the structure of a
 * valid input — the offsets where its fields begin and end, and which fields are counts,
 * lengths, offsets or type tags.
 */

/** mulberry32: small and fast; every case derives its own stream from (format, index). */
export class Rng {
  private a: number;

  constructor(seed: number) {
    this.a = seed >>> 0;
  }

  static forCase(format: string, index: number): Rng {
    let h = 0x811c9dc5;
    for (let i = 0; i < format.length; i++) h = Math.imul(h ^ format.charCodeAt(i), 0x01000193) >>> 0;
    return new Rng(Math.imul(h ^ index, 0x9e3779b1) ^ index);
  }

  next(): number {
    this.a = (this.a + 0x6d2b79f5) >>> 0;
    let t = this.a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }

  chance(p: number): boolean {
    return this.next() < p;
  }
}

/** What a field of a valid input holds, so mutations can pick values that hurt. */
export type FieldKind = 'count' | 'length' | 'offset' | 'dim' | 'type' | 'value' | 'tag';

export interface Field {
  offset: number;
  /** Bytes: 1, 2, 4 or 8 for integers; anything for opaque ranges. */
  size: number;
  kind: FieldKind;
}

/** A valid input and its structure. */
export interface Structured {
  bytes: Uint8Array;
  fields: Field[];
  /** Offsets where a structure (record, entry, opcode) begins or ends: truncation points. */
  boundaries: number[];
}

/** Values that break unchecked arithmetic: zero, one, sign bits, powers of two near limits. */
export const INTERESTING_U64: readonly bigint[] = [
  0n, 1n, 2n, 7n, 31n, 32n, 33n, 255n, 4096n, 65535n, 65536n,
  0x7fffffffn, 0x80000000n, 0xffffffffn, 0x100000000n, 0x100000001n,
  (1n << 53n) - 1n, 1n << 53n, (1n << 62n), 0x7fffffffffffffffn, 0x8000000000000000n, 0xffffffffffffffffn,
  0xfffffffffffffff0n, 0xffffffffffffffffn - 31n,
];
export const INTERESTING_U32: readonly number[] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 30, 31, 39, 40, 41, 255, 256, 0x7fff, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];

export function writeUint(out: Uint8Array, offset: number, size: number, value: bigint): void {
  for (let i = 0; i < size && offset + i < out.length; i++) out[offset + i] = Number((value >> BigInt(8 * i)) & 0xffn);
}

export function readUint(bytes: Uint8Array, offset: number, size: number): bigint {
  let v = 0n;
  for (let i = size - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[offset + i] ?? 0);
  return v;
}

/** A value for an integer field of this kind, relative to the file where that helps. */
function hostileValue(rng: Rng, field: Field, fileSize: number, original: bigint): bigint {
  const mask = field.size >= 8 ? 0xffffffffffffffffn : (1n << BigInt(8 * field.size)) - 1n;
  const candidates: bigint[] = [
    rng.pick(INTERESTING_U64),
    BigInt(rng.pick(INTERESTING_U32)),
    original + 1n,
    original - 1n,
    original * 2n,
    original + BigInt(fileSize),
    BigInt(fileSize),
    BigInt(fileSize + 1 + rng.int(64)),
    original ^ (1n << BigInt(rng.int(8 * field.size))),
  ];
  if (field.kind === 'type' || field.kind === 'tag') candidates.push(BigInt(rng.int(48)), BigInt(rng.int(48)));
  if (field.kind === 'offset') candidates.push(original + BigInt(1 + rng.int(31)), -1n, -BigInt(1 + rng.int(4096)));
  return rng.pick(candidates) & mask;
}

/** One mutation of a structured input; the result may be shorter or longer than the input. */
export function mutateStructured(rng: Rng, s: Structured, headerEnd = s.bytes.length): Uint8Array {
  const op = rng.int(10);
  const { bytes, fields, boundaries } = s;
  if (op <= 1 && boundaries.length > 0) {
    // truncation at a structure boundary, or one byte either side of it
    const at = Math.max(0, Math.min(bytes.length - 1, rng.pick(boundaries) + rng.pick([0, 0, 0, -1, 1])));
    return bytes.slice(0, at);
  }
  const out = new Uint8Array(bytes);
  if (op <= 5 && fields.length > 0) {
    const n = rng.chance(0.8) ? 1 : 1 + rng.int(4);
    for (let k = 0; k < n; k++) {
      const f = rng.pick(fields);
      if (f.size > 8) {
        for (let i = 0; i < Math.min(f.size, 1 + rng.int(16)); i++) out[f.offset + rng.int(f.size)] = rng.int(256);
      } else {
        writeUint(out, f.offset, f.size, hostileValue(rng, f, bytes.length, readUint(bytes, f.offset, f.size)));
      }
    }
    return out;
  }
  if (op <= 8) {
    // bit flips, mostly in the header where the parser looks
    const n = 1 + rng.int(rng.chance(0.7) ? 2 : 16);
    const range = rng.chance(0.85) ? Math.max(1, headerEnd) : out.length;
    for (let k = 0; k < n; k++) {
      const i = rng.int(range);
      out[i] = out[i]! ^ (1 << rng.int(8));
    }
    return out;
  }
  // splice: repeat or delete a span between two boundaries
  if (boundaries.length < 2) return out.slice(0, rng.int(out.length));
  let a = rng.pick(boundaries);
  let b = rng.pick(boundaries);
  if (a > b) [a, b] = [b, a];
  if (rng.chance(0.5)) return concat([bytes.subarray(0, a), bytes.subarray(b)]);
  return concat([bytes.subarray(0, b), bytes.subarray(a, b), bytes.subarray(b)]);
}

export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Random bit flips and byte overwrites with no knowledge of the structure. */
export function mutateBlind(rng: Rng, bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(bytes);
  const n = 1 + rng.int(8);
  for (let k = 0; k < n && out.length > 0; k++) {
    const i = rng.int(out.length);
    out[i] = rng.chance(0.5) ? out[i]! ^ (1 << rng.int(8)) : rng.pick([0, 0xff, 0x7f, 0x80, rng.int(256)]);
  }
  return out;
}

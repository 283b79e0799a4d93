import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { XglmError, type XglmErrorCode } from '../src/errors.js';
import {
  GGML_TYPE_TRAITS,
  GGUF_LIMITS,
  GgmlType,
  type GgufArray,
  GgufReader,
  GgufValueType,
  GgufWriter,
  encodeGgufHeader,
  kv,
} from '../src/gguf/index.js';
import { native } from '../src/native.js';
import { FIXTURES_DIR } from './helpers/fixtures.js';

// Written by llama.cpp's gguf-py (see fixtures/gguf/make-reference.py): an independent writer.
const reference = path.join(FIXTURES_DIR, 'gguf', 'reference.gguf');

function tmpDir(t: { teardown(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xglm-gguf-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function rewrite(inFile: string, outFile: string): Promise<void> {
  const reader = GgufReader.open(inFile);
  try {
    const writer = await GgufWriter.create(outFile, reader.kv, reader.tensors);
    for (const t of reader.tensors) await writer.write(reader.readTensorBytes(t));
    await writer.finish();
  } finally {
    reader.close();
  }
}

test('reads every value type of a file written by gguf-py', (t) => {
  const r = GgufReader.open(reference);
  t.teardown(() => r.close());
  t.is(r.header.version, 3);
  t.is(r.header.alignment, 32);
  t.is(r.get('general.architecture'), 'test');
  t.is(r.get('t.u8'), 200);
  t.is(r.get('t.i8'), -100);
  t.is(r.get('t.u16'), 60000);
  t.is(r.get('t.i16'), -30000);
  t.is(r.get('t.u32'), 4000000000);
  t.is(r.get('t.i32'), -2000000000);
  t.is(r.get('t.f32'), Math.fround(3.14159));
  t.is(r.get('t.u64'), 2n ** 63n + 5n);
  t.is(r.get('t.i64'), -(2n ** 62n));
  t.is(r.get('t.f64'), 2.718281828459045);
  t.is(r.get('t.bool'), true);
  t.is(r.get('t.str'), 'héllo ▁wörld 🙂');
  t.deepEqual((r.get('t.arr_str') as GgufArray).items, ['a', '', '▁b', '<madeupword0>']);
  t.deepEqual(Array.from((r.get('t.arr_i32') as GgufArray).items as Int32Array), [1, -2, 3]);
  t.deepEqual(Array.from((r.get('t.arr_f32') as GgufArray).items as Float32Array), [0.5, -1.25]);
  t.deepEqual((r.get('t.arr_bool') as GgufArray).items, [true, false, true]);
  t.deepEqual(Array.from((r.get('t.arr_u8') as GgufArray).items as Uint8Array), [1, 2, 255]);
  const nested = r.get('t.arr_nested') as GgufArray;
  t.is(nested.itemType, GgufValueType.ARRAY);
  t.deepEqual(
    (nested.items as GgufArray[]).map((a) => Array.from(a.items as Int32Array)),
    [[1, 2], [3]],
  );
  // PyTorch/numpy shapes are reversed in GGUF: (3, 5) -> [5, 3].
  t.deepEqual(
    r.tensors.map((x) => [x.name, x.dims, x.type]),
    [
      ['a.weight', [5, 3], GgmlType.F32],
      ['b.bias', [7], GgmlType.F16],
      ['c.weight', [32, 2], GgmlType.Q8_0],
      ['d.weight', [3, 2, 2], GgmlType.F32],
    ],
  );
  const a = r.readTensorBytes(r.tensor('a.weight')!);
  t.is(a.length, 60);
});

test('read -> write reproduces a gguf-py file byte for byte', async (t) => {
  const out = path.join(tmpDir(t), 'copy.gguf');
  await rewrite(reference, out);
  t.true(fs.readFileSync(out).equals(fs.readFileSync(reference)));
});

test('read -> write -> read -> write is stable, with a custom alignment', async (t) => {
  const dir = tmpDir(t);
  const first = path.join(dir, 'a.gguf');
  const kvs = [
    kv.str('general.architecture', 'x'),
    kv.u32('general.alignment', 64),
    kv.strings('tok', ['<s>', 'ü', '']),
    kv.f32s('scores', new Float32Array([-1.5, 0, Number.NaN])),
    { key: 'big', type: GgufValueType.ARRAY, value: { itemType: GgufValueType.UINT64, items: new BigUint64Array([0n, 2n ** 64n - 1n]) } },
  ];
  const w = await GgufWriter.create(first, kvs, [
    { name: 'w', dims: [32, 3], type: GgmlType.Q8_0 },
    { name: 'b', dims: [5], type: GgmlType.F32 },
  ]);
  await w.write(new Uint8Array(34 * 3).fill(7));
  await w.write(new Uint8Array(20).fill(9));
  await w.finish();
  const r = GgufReader.open(first);
  t.teardown(() => r.close());
  t.is(r.header.alignment, 64);
  t.is(r.header.dataOffset % 64, 0);
  t.deepEqual(r.tensors.map((x) => x.offset), [0, 128]);
  t.deepEqual(Array.from(r.readTensorBytes(r.tensor('b')!)), new Array(20).fill(9));
  t.is(r.header.fileSize, r.header.dataOffset + 128 + 64);
  const second = path.join(dir, 'b.gguf');
  await rewrite(first, second);
  t.true(fs.readFileSync(first).equals(fs.readFileSync(second)));
});

test('the ggml type table matches the addon', (t) => {
  for (const [id, traits] of GGML_TYPE_TRAITS) {
    const info = native().ggmlTypeInfo(id);
    t.deepEqual({ name: traits.name, blockSize: traits.blockSize, typeSize: traits.typeSize }, { name: info.name, blockSize: info.blockSize, typeSize: info.typeSize }, `type ${id}`);
  }
});

test('the writer refuses what ggml could not load', async (t) => {
  const bad = (f: () => unknown) => t.throws(f, { instanceOf: XglmError, code: 'ERR_XGLM_INVALID_ARGUMENT' } as never);
  bad(() => encodeGgufHeader([], [{ name: 'x', dims: [48], type: GgmlType.Q4_0 }]));
  bad(() => encodeGgufHeader([], [{ name: 'x'.repeat(64), dims: [1], type: GgmlType.F32 }]));
  bad(() => encodeGgufHeader([], [{ name: 'x', dims: [1, 1, 1, 1, 1], type: GgmlType.F32 }]));
  bad(() => encodeGgufHeader([kv.u32('a', 1), kv.u32('a', 2)], []));
  bad(() => encodeGgufHeader([kv.u32('general.alignment', 24)], []));
  bad(() => encodeGgufHeader([kv.u8('a', 256)], []));
  const out = path.join(tmpDir(t), 'x.gguf');
  const w = await GgufWriter.create(out, [], [{ name: 'x', dims: [4], type: GgmlType.F32 }]);
  await t.throwsAsync(w.write(new Uint8Array(20)), { code: 'ERR_XGLM_INVALID_ARGUMENT' } as never);
  await t.throwsAsync(w.finish(), { code: 'ERR_XGLM_INVALID_ARGUMENT' } as never);
  t.false(fs.existsSync(out));
  t.false(fs.existsSync(`${out}.partial`));
});

/** Builds a header by hand: little-endian fields, for hostile files. */
class Bytes {
  parts: Buffer[] = [];
  u32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.parts.push(b);
    return this;
  }
  u64(v: bigint | number): this {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.parts.push(b);
    return this;
  }
  str(s: string): this {
    this.u64(Buffer.byteLength(s));
    this.parts.push(Buffer.from(s));
    return this;
  }
  raw(b: Buffer): this {
    this.parts.push(b);
    return this;
  }
  done(): Buffer {
    return Buffer.concat(this.parts);
  }
}

const header = (nTensors: number, nKv: number) => new Bytes().raw(Buffer.from('GGUF')).u32(3).u64(nTensors).u64(nKv);

test('hostile headers are refused before anything is allocated', (t) => {
  const dir = tmpDir(t);
  const cases: Array<[string, Buffer, XglmErrorCode, RegExp]> = [
    ['not gguf', Buffer.from('GGML0000000000000000000000000000'), 'ERR_XGLM_GGUF_INVALID', /magic/],
    ['v1', new Bytes().raw(Buffer.from('GGUF')).u32(1).u64(0).u64(0).done(), 'ERR_XGLM_UNSUPPORTED', /version 1/],
    ['big-endian', new Bytes().raw(Buffer.from('GGUF')).u32(0x03000000).u64(0).u64(0).done(), 'ERR_XGLM_UNSUPPORTED', /big-endian/],
    ['kv count', header(0, 2 ** 40).done(), 'ERR_XGLM_GGUF_LIMIT', /metadata pairs/],
    ['kv count vs file', header(0, 1000).done(), 'ERR_XGLM_GGUF_INVALID', /more than the file holds/],
    ['tensor count', header(2 ** 40, 0).done(), 'ERR_XGLM_GGUF_LIMIT', /tensors/],
    ['u64 beyond 2^53', header(0, 1).u64(2n ** 63n).raw(Buffer.alloc(16)).done(), 'ERR_XGLM_GGUF_LIMIT', /too large/],
    ['key length', header(0, 1).u64(2 ** 40).u32(0).raw(Buffer.alloc(16)).done(), 'ERR_XGLM_GGUF_LIMIT', /limit 65535/],
    ['string past end', header(0, 1).str('k').u32(GgufValueType.STRING).u64(1 << 20).raw(Buffer.alloc(10)).done(), 'ERR_XGLM_GGUF_INVALID', /past the end/],
    ['array count', header(0, 1).str('k').u32(GgufValueType.ARRAY).u32(GgufValueType.UINT32).u64(2 ** 40).done(), 'ERR_XGLM_GGUF_LIMIT', /items/],
    ['array vs file', header(0, 1).str('k').u32(GgufValueType.ARRAY).u32(GgufValueType.STRING).u64(1 << 20).raw(Buffer.alloc(64)).done(), 'ERR_XGLM_GGUF_INVALID', /more than the file holds/],
    ['deep arrays', header(0, 1).str('k').u32(GgufValueType.ARRAY).u32(GgufValueType.ARRAY).u64(1).u32(GgufValueType.ARRAY).u64(1).u32(GgufValueType.ARRAY).u64(1).raw(Buffer.alloc(64)).done(), 'ERR_XGLM_GGUF_LIMIT', /nested/],
    ['bad value type', header(0, 1).str('k').u32(13).raw(Buffer.alloc(16)).done(), 'ERR_XGLM_GGUF_INVALID', /unknown value type/],
    ['bad bool', header(0, 1).str('k').u32(GgufValueType.BOOL).raw(Buffer.from([2])).raw(Buffer.alloc(16)).done(), 'ERR_XGLM_GGUF_INVALID', /bool/],
    ['duplicate key', header(0, 2).str('k').u32(GgufValueType.UINT8).raw(Buffer.from([1])).str('k').u32(GgufValueType.UINT8).raw(Buffer.from([1])).done(), 'ERR_XGLM_GGUF_INVALID', /duplicate key/],
    ['bad utf-8', header(0, 1).str('k').u32(GgufValueType.STRING).u64(2).raw(Buffer.from([0xff, 0xfe])).raw(Buffer.alloc(16)).done(), 'ERR_XGLM_GGUF_INVALID', /UTF-8/],
    ['alignment not u32', header(0, 1).str('general.alignment').u32(GgufValueType.UINT64).u64(32).raw(Buffer.alloc(16)).done(), 'ERR_XGLM_GGUF_INVALID', /uint32/],
    ['alignment 48', header(0, 1).str('general.alignment').u32(GgufValueType.UINT32).u32(48).raw(Buffer.alloc(16)).done(), 'ERR_XGLM_GGUF_INVALID', /power of two/],
    ['5 dims', header(1, 0).str('t').u32(5).raw(Buffer.alloc(64)).done(), 'ERR_XGLM_GGUF_LIMIT', /5 dimensions/],
    ['long name', header(1, 0).str('n'.repeat(64)).raw(Buffer.alloc(64)).done(), 'ERR_XGLM_GGUF_LIMIT', /limit 63/],
    ['elements overflow', header(1, 0).str('t').u32(2).u64(2 ** 40).u64(2 ** 40).raw(Buffer.alloc(64)).done(), 'ERR_XGLM_GGUF_LIMIT', /too many elements/],
    ['bad ggml type', header(1, 0).str('t').u32(1).u64(4).u32(4).u64(0).raw(Buffer.alloc(64)).done(), 'ERR_XGLM_GGUF_INVALID', /unknown ggml type 4/],
    ['row vs block', header(1, 0).str('t').u32(1).u64(48).u32(GgmlType.Q4_0).u64(0).raw(Buffer.alloc(64)).done(), 'ERR_XGLM_GGUF_INVALID', /blocks of 32/],
    ['unaligned offset', header(1, 0).str('t').u32(1).u64(4).u32(GgmlType.F32).u64(8).raw(Buffer.alloc(64)).done(), 'ERR_XGLM_GGUF_INVALID', /alignment/],
    ['data past end', header(1, 0).str('t').u32(1).u64(1024).u32(GgmlType.F32).u64(0).raw(Buffer.alloc(64)).done(), 'ERR_XGLM_GGUF_INVALID', /past the end/],
    ['duplicate tensor', header(2, 0).str('t').u32(1).u64(4).u32(GgmlType.F32).u64(0).str('t').u32(1).u64(4).u32(GgmlType.F32).u64(32).raw(Buffer.alloc(96)).done(), 'ERR_XGLM_GGUF_INVALID', /duplicate tensor/],
    ['truncated header', fs.readFileSync(reference).subarray(0, 300), 'ERR_XGLM_GGUF_INVALID', /more than the file holds/],
    ['truncated kv', fs.readFileSync(reference).subarray(0, 500), 'ERR_XGLM_GGUF_INVALID', /past the end/],
    ['truncated data', fs.readFileSync(reference).subarray(0, 1100), 'ERR_XGLM_GGUF_INVALID', /"d.weight" .* past the end/],
  ];
  for (const [name, bytes, code, message] of cases) {
    const file = path.join(dir, `${name.replace(/\W+/g, '-')}.gguf`);
    fs.writeFileSync(file, bytes);
    const err = t.throws(() => GgufReader.open(file), { instanceOf: XglmError }, name);
    t.is((err as XglmError | undefined)?.code, code, name);
    t.regex(err?.message ?? '', message, name);
  }
  t.true(GGUF_LIMITS.maxDims === 4);
});

test('a GGUF v2 file reads like v3', (t) => {
  const dir = tmpDir(t);
  const bytes = Buffer.from(fs.readFileSync(reference));
  bytes.writeUInt32LE(2, 4);
  const file = path.join(dir, 'v2.gguf');
  fs.writeFileSync(file, bytes);
  const r = GgufReader.open(file);
  t.teardown(() => r.close());
  t.is(r.header.version, 2);
  t.is(r.get('t.str'), 'héllo ▁wörld 🙂');
  t.is(r.tensors.length, 4);
});

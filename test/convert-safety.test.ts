import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { convert } from '../src/convert/index.js';
import { unpickle, unpickleStateDict } from '../src/convert/pickle.js';
import { openPytorchCheckpoint } from '../src/convert/pytorch.js';
import { ZipReader } from '../src/convert/zip.js';
import { XglmError, type XglmErrorCode } from '../src/errors.js';
import { fixtureDir } from './helpers/fixtures.js';

const tinyA = fixtureDir('tiny-a');

function tmpDir(t: { teardown(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xglm-safety-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

// ---- pickle opcodes, written by hand ----

const bytes = (...parts: Array<number | number[] | Buffer>): Buffer =>
  Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(typeof p === 'number' ? [p] : p))));
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};
const P = {
  proto: bytes(0x80, 2),
  stop: bytes(0x2e),
  mark: bytes(0x28),
  tuple: bytes(0x74),
  tuple1: bytes(0x85),
  emptyTuple: bytes(0x29),
  emptyDict: bytes(0x7d),
  setitems: bytes(0x75),
  reduce: bytes(0x52),
  build: bytes(0x62),
  binpersid: bytes(0x51),
  newfalse: bytes(0x89),
  newobj: bytes(0x81),
  stackGlobal: bytes(0x93),
  global: (module: string, name: string) => bytes(0x63, Buffer.from(`${module}\n${name}\n`, 'latin1')),
  str: (s: string) => bytes(0x58, u32(Buffer.byteLength(s)), Buffer.from(s)),
  int: (n: number) => bytes(0x4a, u32(n)),
  inst: (module: string, name: string) => bytes(0x69, Buffer.from(`${module}\n${name}\n`, 'latin1')),
};

/** `name -> _rebuild_tensor_v2(('storage', FloatStorage, key, 'cpu', n), 0, (n,), (1,), False, OrderedDict())` */
function tensorEntry(name: string, key: string, n: number, storageClass: [string, string] = ['torch', 'FloatStorage']): Buffer {
  return stridedTensorEntry(name, key, n, 0, [n], [1], storageClass);
}

/** A tensor viewing storage `key` (n elements) from `offset` with any shape and strides. */
function stridedTensorEntry(name: string, key: string, n: number, offset: number, shape: number[], stride: number[], storageClass: [string, string] = ['torch', 'FloatStorage']): Buffer {
  const intTuple = (xs: number[]) => bytes(P.mark, ...xs.map(P.int), P.tuple);
  return bytes(
    P.str(name),
    P.global('torch._utils', '_rebuild_tensor_v2'),
    P.mark,
    P.mark,
    P.str('storage'),
    P.global(...storageClass),
    P.str(key),
    P.str('cpu'),
    P.int(n),
    P.tuple,
    P.binpersid,
    P.int(offset),
    intTuple(shape),
    intTuple(stride),
    P.newfalse,
    P.global('collections', 'OrderedDict'),
    P.emptyTuple,
    P.reduce,
    P.tuple,
    P.reduce,
  );
}

function stateDict(...entries: Buffer[]): Buffer {
  return bytes(P.proto, P.global('collections', 'OrderedDict'), P.emptyTuple, P.reduce, P.mark, ...entries, P.setitems, P.stop);
}

test('a hand-written state dict pickle is understood', (t) => {
  const dict = unpickleStateDict(stateDict(tensorEntry('w', '0', 3), tensorEntry('b', '1', 2, ['torch', 'HalfStorage'])));
  t.deepEqual([...dict.keys()], ['w', 'b']);
  t.like(dict.get('w'), { storageOffset: 0, shape: [3], stride: [1], storage: { key: '0', dtype: 'F32', numel: 3 } });
  t.is(dict.get('b')!.storage.dtype, 'F16');
});

test('strided, offset and shared storages are read element by element', (t) => {
  const dir = tmpDir(t);
  const storage = Buffer.from(new Float32Array(Array.from({ length: 12 }, (_, i) => i)).buffer);
  const half = Buffer.from(new Uint16Array([0x3c00, 0x4000, 0xc200, 0x0001]).buffer); // 1, 2, -3, 2^-24
  const pickle = stateDict(
    stridedTensorEntry('plain', '0', 12, 0, [3, 4], [4, 1]),
    stridedTensorEntry('transposed', '0', 12, 0, [4, 3], [1, 4]),
    stridedTensorEntry('offset', '0', 12, 5, [2, 3], [3, 1]),
    stridedTensorEntry('every_other', '0', 12, 1, [2, 2], [6, 2]),
    stridedTensorEntry('half', '1', 4, 0, [4], [1], ['torch', 'HalfStorage']),
  );
  const file = path.join(dir, 'pytorch_model.bin');
  fs.writeFileSync(file, makeZip([
    { name: 'archive/data.pkl', data: pickle },
    { name: 'archive/data/0', data: storage },
    { name: 'archive/data/1', data: half },
  ]));
  const source = openPytorchCheckpoint(file);
  t.teardown(() => source.close());
  const rows = (name: string, first: number, count: number) => Array.from(source.readRows(name, first, count));
  t.deepEqual(rows('plain', 1, 2), [4, 5, 6, 7, 8, 9, 10, 11]);
  t.deepEqual(rows('transposed', 0, 4), [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]);
  t.deepEqual(rows('transposed', 2, 1), [2, 6, 10]);
  t.deepEqual(rows('offset', 0, 2), [5, 6, 7, 8, 9, 10]);
  t.deepEqual(rows('every_other', 0, 2), [1, 3, 7, 9]);
  t.deepEqual(rows('half', 0, 1), [1, 2, -3, 2 ** -24]);
  t.true(source.sameData('plain', 'plain'));
  t.false(source.sameData('plain', 'transposed'));
  // A view reaching past its storage is refused when the archive is opened.
  fs.writeFileSync(file, makeZip([
    { name: 'archive/data.pkl', data: stateDict(stridedTensorEntry('w', '0', 12, 4, [3, 4], [4, 1])) },
    { name: 'archive/data/0', data: storage },
  ]));
  t.throws(() => openPytorchCheckpoint(file), { code: 'ERR_XGLM_CONVERT', message: /reaches element 15 of a storage of 12/ } as never);
});

/** Hostile pickles; `marker` is the file each would create if anything ran. */
function hostilePickles(marker: string): Array<[string, Buffer, RegExp]> {
  const touch = `touch ${marker}`;
  return [
    ['os.system via GLOBAL + REDUCE', bytes(P.proto, P.global('os', 'system'), P.str(touch), P.tuple1, P.reduce, P.stop), /global os\.system is not allowed/],
    ['posix.system', bytes(P.proto, P.global('posix', 'system'), P.str(touch), P.tuple1, P.reduce, P.stop), /posix\.system/],
    ['builtins.eval', bytes(P.proto, P.global('builtins', 'eval'), P.str(`open(${JSON.stringify(marker)}, 'w')`), P.tuple1, P.reduce, P.stop), /builtins\.eval/],
    [
      'getattr chain via STACK_GLOBAL',
      bytes(P.proto, P.str('builtins'), P.str('getattr'), P.stackGlobal, P.str('builtins'), P.str('__import__'), P.stackGlobal, P.str('os'), P.tuple1, P.reduce, P.str('system'), P.mark, P.tuple, P.reduce, P.str(touch), P.tuple1, P.reduce, P.stop),
      /builtins\.getattr/,
    ],
    ['unknown global', bytes(P.proto, P.global('collections', 'defaultdict'), P.emptyTuple, P.reduce, P.stop), /collections\.defaultdict/],
    ['torch.load is not a state dict name', bytes(P.proto, P.global('torch', 'load'), P.str(marker), P.tuple1, P.reduce, P.stop), /torch\.load/],
    [
      'REDUCE on the result of a REDUCE',
      bytes(P.proto, P.global('collections', 'OrderedDict'), P.emptyTuple, P.reduce, P.str(touch), P.tuple1, P.reduce, P.stop),
      /REDUCE calls dict/,
    ],
    [
      'nested REDUCE as a tensor storage',
      bytes(
        P.proto,
        P.global('torch._utils', '_rebuild_tensor_v2'),
        P.mark,
        P.global('collections', 'OrderedDict'),
        P.emptyTuple,
        P.reduce,
        P.int(0),
        P.int(1),
        P.tuple1,
        P.int(1),
        P.tuple1,
        P.newfalse,
        P.global('collections', 'OrderedDict'),
        P.emptyTuple,
        P.reduce,
        P.tuple,
        P.reduce,
        P.stop,
      ),
      /not a storage/,
    ],
    ['INST opcode', bytes(P.proto, P.mark, P.str(touch), P.inst('os', 'system'), P.stop), /INST is not allowed/],
    ['NEWOBJ opcode', bytes(P.proto, P.global('collections', 'OrderedDict'), P.emptyTuple, P.newobj, P.stop), /NEWOBJ is not allowed/],
    ['storage class from elsewhere', stateDict(tensorEntry('w', '0', 3, ['os', 'system'])), /os\.system/],
    ['storage key that is a path', stateDict(tensorEntry('w', '../../etc/passwd', 3)), /storage key/],
    [
      'persistent id that is not a storage',
      bytes(P.proto, P.mark, P.str('evil'), P.str(touch), P.tuple, P.binpersid, P.stop),
      /not a storage reference/,
    ],
    ['BUILD on a tensor', bytes(P.proto, tensorEntry('w', '0', 3).subarray(Buffer.byteLength('w') + 5), P.emptyDict, P.build, P.stop), /BUILD on tensor/],
  ];
}

// ---- a zip writer for test archives ----

/** Writes a zip; with `zip64`, sizes and offsets go in zip64 fields, as large torch.save files do. */
function makeZip(entries: Array<{ name: string; data: Buffer; deflate?: boolean }>, zip64 = false): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const e of entries) {
    const name = Buffer.from(e.name);
    const payload = e.deflate ? zlib.deflateRawSync(e.data) : e.data;
    const crc = zlib.crc32(e.data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(e.deflate ? 8 : 0, 8);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(payload.length, 18);
    local.writeUInt32LE(e.data.length, 22);
    local.writeUInt16LE(name.length, 26);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(e.deflate ? 8 : 0, 10);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(zip64 ? 0xffffffff : payload.length, 20);
    central.writeUInt32LE(zip64 ? 0xffffffff : e.data.length, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE(zip64 ? 0xffffffff : offset, 42);
    const extra = Buffer.alloc(zip64 ? 28 : 0);
    if (zip64) {
      central.writeUInt16LE(28, 30);
      extra.writeUInt16LE(1, 0);
      extra.writeUInt16LE(24, 2);
      extra.writeBigUInt64LE(BigInt(e.data.length), 4);
      extra.writeBigUInt64LE(BigInt(payload.length), 12);
      extra.writeBigUInt64LE(BigInt(offset), 20);
    }
    locals.push(local, name, payload);
    centrals.push(central, name, extra);
    offset += 30 + name.length + payload.length;
  }
  const dir = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(zip64 ? 0xffff : entries.length, 8);
  end.writeUInt16LE(zip64 ? 0xffff : entries.length, 10);
  end.writeUInt32LE(zip64 ? 0xffffffff : dir.length, 12);
  end.writeUInt32LE(zip64 ? 0xffffffff : offset, 16);
  if (!zip64) return Buffer.concat([...locals, dir, end]);
  const record = Buffer.alloc(56);
  record.writeUInt32LE(0x06064b50, 0);
  record.writeBigUInt64LE(44n, 4);
  record.writeBigUInt64LE(BigInt(entries.length), 24);
  record.writeBigUInt64LE(BigInt(entries.length), 32);
  record.writeBigUInt64LE(BigInt(dir.length), 40);
  record.writeBigUInt64LE(BigInt(offset), 48);
  const locator = Buffer.alloc(20);
  locator.writeUInt32LE(0x07064b50, 0);
  locator.writeBigUInt64LE(BigInt(offset + dir.length), 8);
  locator.writeUInt32LE(1, 16);
  return Buffer.concat([...locals, dir, record, locator, end]);
}

/** A checkpoint folder: tiny-a's config and tokenizer, with the given pytorch_model.bin. */
function checkpointWith(dir: string, bin: Buffer): string {
  const ckpt = path.join(dir, 'ckpt');
  fs.mkdirSync(ckpt);
  for (const f of ['config.json', 'sentencepiece.bpe.model']) fs.copyFileSync(path.join(tinyA, f), path.join(ckpt, f));
  fs.writeFileSync(path.join(ckpt, 'pytorch_model.bin'), bin);
  return ckpt;
}

test('hostile pickles are refused with ERR_XGLM_UNSAFE_PICKLE and nothing runs', async (t) => {
  const dir = tmpDir(t);
  const marker = path.join(dir, 'pwned');
  for (const [name, pickle, message] of hostilePickles(marker)) {
    const err = t.throws(() => unpickle(pickle), { instanceOf: XglmError }, name);
    t.is(err?.code, 'ERR_XGLM_UNSAFE_PICKLE', name);
    t.regex(err?.message ?? '', message, name);
    // The same through convert(): the pickle inside a well-formed torch.save archive.
    const ckpt = checkpointWith(fs.mkdtempSync(path.join(dir, 'c-')), makeZip([
      { name: 'archive/data.pkl', data: pickle },
      { name: 'archive/data/0', data: Buffer.alloc(12) },
      { name: 'archive/version', data: Buffer.from('3\n') },
    ]));
    const out = path.join(ckpt, 'out.gguf');
    await t.throwsAsync(convert(ckpt, out, { type: 'f32' }), { code: 'ERR_XGLM_UNSAFE_PICKLE' } as never, name);
    t.false(fs.existsSync(out), name);
    t.false(fs.existsSync(`${out}.partial`), name);
  }
  t.false(fs.existsSync(marker), 'no hostile pickle created its marker file');
});

test('zip archives with unsafe entry names are refused; nothing is written outside', async (t) => {
  const dir = tmpDir(t);
  const good = { name: 'archive/data.pkl', data: stateDict(tensorEntry('w', '0', 3)) };
  const cases: Array<[string, XglmErrorCode]> = [
    ['../evil', 'ERR_XGLM_UNSAFE_ARCHIVE'],
    ['archive/../../evil', 'ERR_XGLM_UNSAFE_ARCHIVE'],
    ['/tmp/evil', 'ERR_XGLM_UNSAFE_ARCHIVE'],
    ['C:/evil', 'ERR_XGLM_UNSAFE_ARCHIVE'],
    ['archive\\..\\evil', 'ERR_XGLM_UNSAFE_ARCHIVE'],
    ['archive/data.pkl', 'ERR_XGLM_UNSAFE_ARCHIVE'], // a second entry with the same name
  ];
  for (const [name, code] of cases) {
    const sub = fs.mkdtempSync(path.join(dir, 'z-'));
    const ckpt = checkpointWith(sub, makeZip([good, { name, data: Buffer.from('x') }]));
    const err = await t.throwsAsync(convert(ckpt, path.join(ckpt, 'out.gguf'), { type: 'f32' }), { instanceOf: XglmError }, name);
    t.is(err?.code, code, name);
    t.regex(err?.message ?? '', /unsafe entry name|two entries/, name);
    t.false(fs.existsSync(path.join(ckpt, 'out.gguf')));
    t.false(fs.existsSync(path.join(sub, 'evil')));
    t.false(fs.existsSync(path.join(dir, 'evil')));
  }
});

test('damaged archives fail with ERR_XGLM_CONVERT, not a crash', async (t) => {
  const dir = tmpDir(t);
  const real = fs.readFileSync(path.join(tinyA, 'pytorch_model.bin'));
  const flipped = Buffer.from(real);
  flipped[200] = flipped[200]! ^ 0xff; // inside data.pkl: its CRC no longer matches
  for (const [name, bin] of [
    ['truncated', real.subarray(0, real.length - 100)],
    ['no central directory', real.subarray(0, 1000)],
    ['bad crc', flipped],
    ['empty', Buffer.alloc(0)],
  ] as const) {
    const ckpt = checkpointWith(fs.mkdtempSync(path.join(dir, 'd-')), bin);
    await t.throwsAsync(convert(ckpt, path.join(ckpt, 'o.gguf'), { type: 'f32' }), { code: 'ERR_XGLM_CONVERT' } as never, name);
  }
});

test('deflated entries and zip64 directories read like the original archive', async (t) => {
  const dir = tmpDir(t);
  const zip = ZipReader.open(path.join(tinyA, 'pytorch_model.bin'));
  const entries = zip.entries.map((e) => ({ name: e.name, data: zip.readEntry(e) }));
  zip.close();
  await convert(tinyA, path.join(dir, 'original.gguf'), { type: 'f32', weights: 'pytorch' });
  const original = fs.readFileSync(path.join(dir, 'original.gguf'));
  for (const [name, bin] of [
    ['deflated', makeZip(entries.map((e) => ({ ...e, deflate: true })))],
    ['zip64', makeZip(entries, true)],
    ['zip64 deflated', makeZip(entries.map((e) => ({ ...e, deflate: true })), true)],
  ] as const) {
    const ckpt = checkpointWith(fs.mkdtempSync(path.join(dir, 'z-')), bin);
    await convert(ckpt, path.join(ckpt, 'out.gguf'), { type: 'f32', name: 'tiny-a' });
    t.true(fs.readFileSync(path.join(ckpt, 'out.gguf')).equals(original), name);
  }
});

// ---- config.json and tensor checks ----

test('config.json is validated field by field', async (t) => {
  const dir = tmpDir(t);
  const base = JSON.parse(fs.readFileSync(path.join(tinyA, 'config.json'), 'utf8'));
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ model_type: 'gpt2' }, /"model_type" is "gpt2", expected "xglm"/],
    [{ d_model: '64' }, /"d_model" must be an integer/],
    [{ d_model: 0 }, /"d_model" is 0/],
    [{ attention_heads: 5 }, /"attention_heads" \(5\) does not divide d_model/],
    [{ num_layers: 1.5 }, /"num_layers" must be an integer/],
    [{ activation_function: 'relu' }, /"activation_function" is "relu"/],
    [{ scale_embedding: 'yes' }, /"scale_embedding" must be true or false/],
    [{ tie_word_embeddings: false }, /"tie_word_embeddings" is false/],
    [{ pad_token_id: 0 }, /"pad_token_id" is 0/],
    [{ torch_dtype: 'int8' }, /"torch_dtype" is "int8"/],
    [{ vocab_size: 2010 }, /vocab_size 2010/],
    [{ num_layers: 3 }, /no tensor model\.layers\.2\./],
    [{ num_layers: 1 }, /model\.layers\.1\.\S+ is neither converted nor known/],
    [{ ffn_dim: 128 }, /fc1\.weight has shape \[256, 64\], config\.json implies \[128, 64\]/],
  ];
  for (const [patch, message] of cases) {
    const ckpt = fs.mkdtempSync(path.join(dir, 'cfg-'));
    for (const f of ['model.safetensors', 'sentencepiece.bpe.model']) fs.symlinkSync(path.join(tinyA, f), path.join(ckpt, f));
    fs.writeFileSync(path.join(ckpt, 'config.json'), JSON.stringify({ ...base, ...patch }));
    const err = await t.throwsAsync(convert(ckpt, path.join(ckpt, 'o.gguf'), { type: 'f32' }), { code: 'ERR_XGLM_CONVERT' } as never, JSON.stringify(patch));
    t.regex(err?.message ?? '', message, JSON.stringify(patch));
  }
  await t.throwsAsync(convert(tinyA, path.join(dir, 'x.gguf'), { type: 'q3_k' }), { code: 'ERR_XGLM_INVALID_ARGUMENT', message: /unknown output type "q3_k"/ } as never);
  await t.throwsAsync(convert(path.join(dir, 'nowhere'), path.join(dir, 'x.gguf')), { code: 'ERR_XGLM_CONVERT', message: /cannot read/ } as never);
  await t.throwsAsync(convert(tinyA, path.join(dir, 'no', 'such', 'folder.gguf')), { code: 'ERR_XGLM_INVALID_ARGUMENT', message: /cannot write/ } as never);
  await t.throwsAsync(convert(tinyA, path.join(dir, 'x.gguf'), { threads: 0 }), { code: 'ERR_XGLM_INVALID_ARGUMENT' } as never);
});

/** Writes a safetensors file from (name, shape, float32 values). */
function writeSafetensors(file: string, tensors: Array<{ name: string; shape: number[]; values: Float32Array }>): void {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const x of tensors) {
    header[x.name] = { dtype: 'F32', shape: x.shape, data_offsets: [offset, offset + x.values.byteLength] };
    offset += x.values.byteLength;
  }
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([len, json, ...tensors.map((x) => Buffer.from(x.values.buffer, x.values.byteOffset, x.values.byteLength))]));
}

function readFixtureTensors(): Array<{ name: string; shape: number[]; values: Float32Array }> {
  const buf = fs.readFileSync(path.join(tinyA, 'model.safetensors'));
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.toString('utf8', 8, 8 + n));
  return Object.entries<{ shape: number[]; data_offsets: [number, number] }>(header)
    .filter(([k]) => k !== '__metadata__')
    .map(([name, info]) => ({ name, shape: info.shape, values: new Float32Array(buf.buffer.slice(buf.byteOffset + 8 + n + info.data_offsets[0], buf.byteOffset + 8 + n + info.data_offsets[1])) }));
}

function folderWithTensors(dir: string, tensors: ReturnType<typeof readFixtureTensors>): string {
  const ckpt = fs.mkdtempSync(path.join(dir, 'ckpt-'));
  for (const f of ['config.json', 'sentencepiece.bpe.model']) fs.copyFileSync(path.join(tinyA, f), path.join(ckpt, f));
  writeSafetensors(path.join(ckpt, 'model.safetensors'), tensors);
  return ckpt;
}

test('every checkpoint tensor is used or explicitly ignored', async (t) => {
  const dir = tmpDir(t);
  const tensors = readFixtureTensors();
  const embed = tensors.find((x) => x.name === 'model.embed_tokens.weight')!;
  const reference = path.join(dir, 'ref.gguf');
  await convert(tinyA, reference, { type: 'f32' });

  const extra = folderWithTensors(dir, [...tensors, { name: 'model.layers.0.self_attn.extra', shape: [2], values: new Float32Array(2) }]);
  await t.throwsAsync(convert(extra, path.join(dir, 'o.gguf')), { code: 'ERR_XGLM_CONVERT', message: /model\.layers\.0\.self_attn\.extra is neither converted/ } as never);

  const missing = folderWithTensors(dir, tensors.filter((x) => x.name !== 'model.layers.1.fc2.bias'));
  await t.throwsAsync(convert(missing, path.join(dir, 'o.gguf')), { code: 'ERR_XGLM_CONVERT', message: /no tensor model\.layers\.1\.fc2\.bias/ } as never);

  // Tied and equal lm_head and sinusoid buffers are dropped, and the output does not change.
  const ignorable = folderWithTensors(dir, [
    ...tensors,
    { name: 'lm_head.weight', shape: embed.shape, values: embed.values.slice() },
    { name: 'model.embed_positions.weights', shape: [130, 64], values: new Float32Array(130 * 64) },
  ]);
  const result = await convert(ignorable, path.join(dir, 'ign.gguf'), { type: 'f32', name: 'tiny-a' });
  t.deepEqual(result.ignored.sort(), ['lm_head.weight', 'model.embed_positions.weights']);
  t.true(fs.readFileSync(path.join(dir, 'ign.gguf')).equals(fs.readFileSync(reference)));

  const untiedValues = embed.values.slice();
  untiedValues[5] = untiedValues[5]! + 1;
  const untied = folderWithTensors(dir, [...tensors, { name: 'lm_head.weight', shape: embed.shape, values: untiedValues }]);
  await t.throwsAsync(convert(untied, path.join(dir, 'o.gguf')), { code: 'ERR_XGLM_UNSUPPORTED', message: /lm_head\.weight differs/ } as never);
});

test('sharded safetensors convert like the single file; shard names cannot leave the folder', async (t) => {
  const dir = tmpDir(t);
  const tensors = readFixtureTensors();
  const ckpt = fs.mkdtempSync(path.join(dir, 'sharded-'));
  for (const f of ['config.json', 'sentencepiece.bpe.model']) fs.copyFileSync(path.join(tinyA, f), path.join(ckpt, f));
  const half = Math.floor(tensors.length / 2);
  const shards = [tensors.slice(0, half), tensors.slice(half)];
  const weightMap: Record<string, string> = {};
  shards.forEach((s, i) => {
    const file = `model-0000${i + 1}-of-00002.safetensors`;
    writeSafetensors(path.join(ckpt, file), s);
    for (const x of s) weightMap[x.name] = file;
  });
  fs.writeFileSync(path.join(ckpt, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  await convert(ckpt, path.join(dir, 'sharded.gguf'), { type: 'q8_0', name: 'tiny-a' });
  await convert(tinyA, path.join(dir, 'single.gguf'), { type: 'q8_0' });
  t.true(fs.readFileSync(path.join(dir, 'sharded.gguf')).equals(fs.readFileSync(path.join(dir, 'single.gguf'))));

  fs.writeFileSync(path.join(ckpt, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { ...weightMap, 'model.layer_norm.bias': '../model.safetensors' } }));
  await t.throwsAsync(convert(ckpt, path.join(dir, 'o.gguf')), { code: 'ERR_XGLM_UNSAFE_ARCHIVE' } as never);
});

test('hostile safetensors headers are refused', async (t) => {
  const dir = tmpDir(t);
  const header = (json: unknown, extra = 0) => {
    const text = Buffer.from(JSON.stringify(json));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(text.length));
    return Buffer.concat([len, text, Buffer.alloc(extra)]);
  };
  const cases: Array<[string, Buffer, RegExp]> = [
    ['huge header length', Buffer.concat([Buffer.from([0, 0, 0, 0, 0, 0, 0, 0x7f]), Buffer.alloc(16)]), /header length/],
    ['not json', Buffer.concat([Buffer.from([4, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('{{{{')]), /not JSON/],
    ['offsets past the end', header({ w: { dtype: 'F32', shape: [1000], data_offsets: [0, 4000] } }, 16), /do not hold/],
    ['size mismatch', header({ w: { dtype: 'F32', shape: [4], data_offsets: [0, 8] } }, 16), /do not hold/],
    ['bad dtype', header({ w: { dtype: 'F8', shape: [4], data_offsets: [0, 4] } }, 16), /unknown dtype/],
    ['bad shape', header({ w: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, 16), /invalid shape/],
  ];
  for (const [name, file, message] of cases) {
    const ckpt = fs.mkdtempSync(path.join(dir, 'st-'));
    for (const f of ['config.json', 'sentencepiece.bpe.model']) fs.copyFileSync(path.join(tinyA, f), path.join(ckpt, f));
    fs.writeFileSync(path.join(ckpt, 'model.safetensors'), file);
    const err = await t.throwsAsync(convert(ckpt, path.join(ckpt, 'o.gguf')), { code: 'ERR_XGLM_CONVERT' } as never, name);
    t.regex(err?.message ?? '', message, name);
  }
});

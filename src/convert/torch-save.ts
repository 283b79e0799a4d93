/**
 * Writes a state dict the way torch.save (zip format) lays it out, for random test checkpoints:
 *
 *   archive/data.pkl    protocol-2 pickle: OrderedDict of name -> _rebuild_tensor_v2(
 *                         ('storage', torch.<Type>Storage, '<i>', 'cpu', numel), 0, shape, stride,
 *                         False, OrderedDict())
 *   archive/byteorder   "little"
 *   archive/data/<i>    the tensor's elements, stored (not compressed)
 *   archive/version     "3"
 *
 * Storages are streamed: each local header is written with a zero CRC, the data follows, and the
 * header is patched once the CRC is known. Archives are limited to 4 GiB (no zip64 writing).
 */
import fs from 'node:fs';
import zlib from 'node:zlib';
import { XglmError } from '../errors.js';

export interface TorchTensorDesc {
  name: string;
  shape: number[];
  dtype: 'F32' | 'F16' | 'BF16';
}

const STORAGE_CLASS = { F32: 'FloatStorage', F16: 'HalfStorage', BF16: 'BFloat16Storage' } as const;
const ELEMENT_BYTES = { F32: 4, F16: 2, BF16: 2 } as const;

/** A protocol-2 pickle of the state dict's structure (no memo: every object is written once). */
export function stateDictPickle(tensors: readonly TorchTensorDesc[]): Buffer {
  const parts: Buffer[] = [];
  const op = (...bytes: number[]) => parts.push(Buffer.from(bytes));
  const global = (module: string, name: string) => parts.push(Buffer.from([0x63]), Buffer.from(`${module}\n${name}\n`, 'latin1'));
  const str = (s: string) => {
    const b = Buffer.from(s, 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32LE(b.length);
    parts.push(Buffer.from([0x58]), len, b); // BINUNICODE
  };
  const int = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeInt32LE(n);
    parts.push(Buffer.from([0x4a]), b); // BININT
  };
  const MARK = 0x28;
  const TUPLE = 0x74;
  const REDUCE = 0x52;
  op(0x80, 2); // PROTO 2
  global('collections', 'OrderedDict');
  op(0x29, REDUCE, MARK); // EMPTY_TUPLE, REDUCE, MARK
  tensors.forEach((t, i) => {
    const numel = t.shape.reduce((a, b) => a * b, 1);
    if (numel > 0x7fffffff) throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `${t.name}: too many elements for this writer`);
    str(t.name);
    global('torch._utils', '_rebuild_tensor_v2');
    op(MARK, MARK);
    str('storage');
    global('torch', STORAGE_CLASS[t.dtype]);
    str(String(i));
    str('cpu');
    int(numel);
    op(TUPLE, 0x51); // BINPERSID
    int(0);
    op(MARK);
    for (const d of t.shape) int(d);
    op(TUPLE, MARK);
    let stride = numel;
    for (const d of t.shape) {
      stride = d === 0 ? 0 : stride / d;
      int(stride);
    }
    op(TUPLE, 0x89); // NEWFALSE
    global('collections', 'OrderedDict');
    op(0x29, REDUCE, TUPLE, REDUCE);
  });
  op(0x75, 0x2e); // SETITEMS, STOP
  return Buffer.concat(parts);
}

/**
 * Writes `file` as a torch.save archive; `fill(tensor, write)` must write exactly the tensor's
 * bytes (little-endian elements), in one or more calls.
 */
export async function writeTorchStateDict(
  file: string,
  tensors: readonly TorchTensorDesc[],
  fill: (tensor: TorchTensorDesc, write: (bytes: Uint8Array) => Promise<void>) => Promise<void>,
): Promise<number> {
  const handle = await fs.promises.open(`${file}.partial`, 'w');
  const central: Buffer[] = [];
  let position = 0;
  let count = 0;
  const writeAt = async (bytes: Uint8Array, at: number) => {
    let done = 0;
    while (done < bytes.length) done += (await handle.write(bytes, done, bytes.length - done, at + done)).bytesWritten;
  };
  const entry = async (name: string, body: (write: (bytes: Uint8Array) => Promise<void>) => Promise<void>) => {
    const nameBytes = Buffer.from(`archive/${name}`);
    const headerAt = position;
    const header = Buffer.alloc(30);
    position += 30 + nameBytes.length;
    let crc = 0;
    let size = 0;
    await body(async (bytes) => {
      crc = zlib.crc32(bytes, crc);
      await writeAt(bytes, position);
      position += bytes.length;
      size += bytes.length;
    });
    if (position > 0xffffffff) {
      throw new XglmError('ERR_XGLM_UNSUPPORTED', 'random pytorch_model.bin over 4 GiB (zip64) is not written', { hint: 'use the safetensors format for this size' });
    }
    header.writeUInt32LE(0x04034b50, 0);
    header.writeUInt16LE(20, 4); // version needed
    header.writeUInt32LE(crc, 14);
    header.writeUInt32LE(size, 18);
    header.writeUInt32LE(size, 22);
    header.writeUInt16LE(nameBytes.length, 26);
    await writeAt(Buffer.concat([header, nameBytes]), headerAt);
    const record = Buffer.alloc(46);
    record.writeUInt32LE(0x02014b50, 0);
    record.writeUInt16LE(20, 4);
    record.writeUInt16LE(20, 6);
    record.writeUInt32LE(crc, 16);
    record.writeUInt32LE(size, 20);
    record.writeUInt32LE(size, 24);
    record.writeUInt16LE(nameBytes.length, 28);
    record.writeUInt32LE(headerAt, 42);
    central.push(record, nameBytes);
    count++;
  };
  try {
    await entry('data.pkl', (write) => write(stateDictPickle(tensors)));
    await entry('byteorder', (write) => write(Buffer.from('little')));
    for (let i = 0; i < tensors.length; i++) {
      const t = tensors[i]!;
      const expected = t.shape.reduce((a, b) => a * b, 1) * ELEMENT_BYTES[t.dtype];
      let written = 0;
      await entry(`data/${i}`, (write) =>
        fill(t, async (bytes) => {
          written += bytes.length;
          await write(bytes);
        }),
      );
      if (written !== expected) throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `${t.name}: wrote ${written} bytes, expected ${expected}`);
    }
    await entry('version', (write) => write(Buffer.from('3\n')));
    const directory = Buffer.concat(central);
    const end = Buffer.alloc(22);
    end.writeUInt32LE(0x06054b50, 0);
    end.writeUInt16LE(count, 8);
    end.writeUInt16LE(count, 10);
    end.writeUInt32LE(directory.length, 12);
    end.writeUInt32LE(position, 16);
    await writeAt(Buffer.concat([directory, end]), position);
    position += directory.length + end.length;
    await handle.close();
    await fs.promises.rename(`${file}.partial`, file);
    return position;
  } catch (err) {
    await handle.close().catch(() => undefined);
    await fs.promises.rm(`${file}.partial`, { force: true });
    throw err;
  }
}

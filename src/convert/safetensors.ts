/**
 * safetensors checkpoints: model.safetensors, or shards listed in model.safetensors.index.json.
 *
 *   u64 LE header length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end)},
 *   "__metadata__": {...}}, then the data; offsets are relative to the end of the header.
 */
import fs from 'node:fs';
import path from 'node:path';
import { XglmError } from '../errors.js';
import { TORCH_DTYPE_BYTES, type TorchDtype } from './pickle.js';
import { type SourceTensor, type StridedLocation, type TensorSource, checkStridedBounds, contiguousStride, readStridedRows } from './source.js';

export const SAFETENSORS_LIMITS = {
  /** The JSON header (a 7.5B model's is ~100 KB). */
  maxHeaderBytes: 100 * 1024 * 1024,
  maxTensors: 1 << 20,
  maxShards: 10_000,
  maxDims: 8,
} as const;

const DTYPES: Readonly<Record<string, TorchDtype>> = {
  F64: 'F64',
  F32: 'F32',
  F16: 'F16',
  BF16: 'BF16',
  I64: 'I64',
  I32: 'I32',
  I16: 'I16',
  I8: 'I8',
  U8: 'U8',
  BOOL: 'BOOL',
};

function invalid(file: string, message: string): XglmError {
  return new XglmError('ERR_XGLM_CONVERT', `${file}: invalid safetensors file: ${message}`, {
    hint: 'the file is damaged or incomplete; download it again',
  });
}

interface Entry {
  tensor: SourceTensor;
  location: StridedLocation;
}

class SafetensorsSource implements TensorSource {
  readonly tensors = new Map<string, SourceTensor>();
  private readonly entries = new Map<string, Entry>();
  private readonly fds: number[] = [];

  constructor(
    files: string[],
    readonly description: string,
  ) {
    try {
      for (const file of files) this.addFile(file);
    } catch (err) {
      this.close();
      throw err;
    }
  }

  private addFile(file: string): void {
    const fd = fs.openSync(file, 'r');
    this.fds.push(fd);
    const size = fs.fstatSync(fd).size;
    const lengthBytes = Buffer.alloc(8);
    if (size < 8 || fs.readSync(fd, lengthBytes, 0, 8, 0) !== 8) throw invalid(file, 'shorter than 8 bytes');
    const headerLength = lengthBytes.readBigUInt64LE(0);
    if (headerLength > BigInt(Math.min(SAFETENSORS_LIMITS.maxHeaderBytes, size - 8))) {
      throw invalid(file, `header length ${headerLength} is larger than the file or the ${SAFETENSORS_LIMITS.maxHeaderBytes}-byte limit`);
    }
    const header = Buffer.alloc(Number(headerLength));
    if (fs.readSync(fd, header, 0, header.length, 8) !== header.length) throw invalid(file, 'header is truncated');
    let json: unknown;
    try {
      json = JSON.parse(header.toString('utf8'));
    } catch {
      throw invalid(file, 'header is not JSON');
    }
    if (json === null || typeof json !== 'object' || Array.isArray(json)) throw invalid(file, 'header is not a JSON object');
    const dataStart = 8 + header.length;
    const dataSize = size - dataStart;
    const names = Object.keys(json).filter((k) => k !== '__metadata__');
    if (this.tensors.size + names.length > SAFETENSORS_LIMITS.maxTensors) throw invalid(file, 'too many tensors');
    for (const name of names) {
      const info = (json as Record<string, unknown>)[name] as { dtype?: unknown; shape?: unknown; data_offsets?: unknown } | null;
      if (info === null || typeof info !== 'object') throw invalid(file, `entry ${name} is not an object`);
      const dtype = typeof info.dtype === 'string' ? DTYPES[info.dtype] : undefined;
      if (!dtype) throw invalid(file, `tensor ${name} has unknown dtype ${JSON.stringify(info.dtype)}`);
      const shape = info.shape;
      if (!Array.isArray(shape) || shape.length > SAFETENSORS_LIMITS.maxDims || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
        throw invalid(file, `tensor ${name} has an invalid shape`);
      }
      const offsets = info.data_offsets;
      if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
        throw invalid(file, `tensor ${name} has invalid data_offsets`);
      }
      const [begin, end] = offsets as [number, number];
      const numel = (shape as number[]).reduce((a, b) => a * b, 1);
      if (end < begin || end > dataSize || end - begin !== numel * TORCH_DTYPE_BYTES[dtype]) {
        throw invalid(file, `tensor ${name}: data_offsets [${begin}, ${end}) do not hold ${numel} ${dtype} values inside the file`);
      }
      if (this.tensors.has(name)) throw invalid(file, `tensor ${name} appears in two shards`);
      const tensor: SourceTensor = { name, dtype, shape: shape as number[] };
      const location: StridedLocation = {
        fd,
        base: dataStart + begin,
        storageElements: numel,
        storageOffset: 0,
        dtype,
        shape: tensor.shape,
        stride: contiguousStride(tensor.shape),
      };
      checkStridedBounds(location, `${file}: ${name}`);
      this.tensors.set(name, tensor);
      this.entries.set(name, { tensor, location });
    }
  }

  readRows(name: string, first: number, count: number): Float32Array {
    const entry = this.entries.get(name);
    if (!entry) throw new XglmError('ERR_XGLM_CONVERT', `no tensor ${name} in ${this.description}`);
    return readStridedRows(entry.location, first, count);
  }

  sameData(a: string, b: string): boolean {
    const x = this.entries.get(a)?.location;
    const y = this.entries.get(b)?.location;
    return !!x && !!y && x.fd === y.fd && x.base === y.base;
  }

  close(): void {
    for (const fd of this.fds.splice(0)) fs.closeSync(fd);
  }
}

/** Opens one safetensors file. */
export function openSafetensors(file: string): TensorSource {
  return new SafetensorsSource([file], path.basename(file));
}

/** Opens the shards named by a model.safetensors.index.json (`weight_map`: tensor -> shard file). */
export function openShardedSafetensors(indexFile: string): TensorSource {
  let index: unknown;
  try {
    index = JSON.parse(fs.readFileSync(indexFile, 'utf8'));
  } catch (cause) {
    throw new XglmError('ERR_XGLM_CONVERT', `${indexFile} is not valid JSON`, { cause });
  }
  const map = (index as { weight_map?: unknown } | null)?.weight_map;
  if (map === null || typeof map !== 'object' || Array.isArray(map)) {
    throw new XglmError('ERR_XGLM_CONVERT', `${indexFile} has no weight_map object`);
  }
  const dir = path.dirname(indexFile);
  const shards = [...new Set(Object.values(map as Record<string, unknown>))];
  if (shards.length > SAFETENSORS_LIMITS.maxShards) throw new XglmError('ERR_XGLM_CONVERT', `${indexFile} lists ${shards.length} shards`);
  for (const shard of shards) {
    // Shards must be plain file names beside the index: never a path that leaves the folder.
    if (typeof shard !== 'string' || shard !== path.basename(shard) || shard === '..' || shard === '.' || shard.length === 0) {
      throw new XglmError('ERR_XGLM_UNSAFE_ARCHIVE', `${indexFile} names shard ${JSON.stringify(shard)}, not a file in the same folder`);
    }
  }
  const source = new SafetensorsSource(
    (shards as string[]).map((s) => path.join(dir, s)),
    `${path.basename(indexFile)} (${shards.length} shards)`,
  );
  for (const [name, shard] of Object.entries(map as Record<string, string>)) {
    if (!source.tensors.has(name)) {
      source.close();
      throw new XglmError('ERR_XGLM_CONVERT', `${indexFile} maps ${name} to ${shard}, which does not contain it`);
    }
  }
  return source;
}

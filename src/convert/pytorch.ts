/**
 * pytorch_model.bin as written by torch.save (zip format, PyTorch ≥ 1.6):
 *
 *   <prefix>/data.pkl     the state dict, read with the restricted unpickler
 *   <prefix>/data/<key>   raw little-endian storage bytes, stored uncompressed
 *   <prefix>/byteorder    "little" (absent in older files, which are little-endian)
 *   <prefix>/version      format version
 *
 * Tensors are read in place from stored entries; a deflated storage (torch never writes one,
 * but it is legal zip) is inflated once into memory, up to ZIP_LIMITS.maxInflatedBytes.
 */
import path from 'node:path';
import { XglmError } from '../errors.js';
import { TORCH_DTYPE_BYTES, type TensorRef, unpickleStateDict } from './pickle.js';
import { type SourceTensor, type StridedLocation, type TensorSource, checkStridedBounds, readStridedRows } from './source.js';
import { ZipReader } from './zip.js';

/** The pickle itself is small (kilobytes for XGLM); refuse absurd ones before inflating. */
const MAX_PICKLE_BYTES = 64 * 1024 * 1024;

class PytorchSource implements TensorSource {
  readonly tensors = new Map<string, SourceTensor>();
  readonly description: string;
  private readonly refs: Map<string, TensorRef>;
  private readonly locations = new Map<string, StridedLocation>();

  constructor(
    private readonly zip: ZipReader,
    file: string,
  ) {
    this.description = path.basename(file);
    const pickles = zip.entries.filter((e) => /^[^/]+\/data\.pkl$/.test(e.name));
    if (pickles.length !== 1) {
      throw new XglmError('ERR_XGLM_CONVERT', `${file}: expected one <name>/data.pkl in the archive, found ${pickles.length}`, {
        hint: 'this does not look like a torch.save zip checkpoint; legacy (pre-1.6) checkpoints are not supported, re-save with a recent PyTorch or use model.safetensors',
      });
    }
    const prefix = pickles[0]!.name.slice(0, -'data.pkl'.length);
    const byteorder = zip.entry(`${prefix}byteorder`);
    if (byteorder && zip.readEntry(byteorder, 16).toString('latin1') !== 'little') {
      throw new XglmError('ERR_XGLM_UNSUPPORTED', `${file}: big-endian checkpoints are not supported`);
    }
    this.refs = unpickleStateDict(zip.readEntry(pickles[0]!, MAX_PICKLE_BYTES));
    const inflated = new Map<string, Uint8Array>();
    for (const [name, ref] of this.refs) {
      const entry = zip.entry(`${prefix}data/${ref.storage.key}`);
      if (!entry) throw new XglmError('ERR_XGLM_CONVERT', `${file}: storage ${ref.storage.key} of ${name} is missing from the archive`);
      const elemBytes = TORCH_DTYPE_BYTES[ref.storage.dtype];
      if (entry.uncompressedSize < ref.storage.numel * elemBytes) {
        throw new XglmError('ERR_XGLM_CONVERT', `${file}: storage ${ref.storage.key} holds ${entry.uncompressedSize} bytes, less than ${ref.storage.numel} ${ref.storage.dtype} values`);
      }
      // Stored entries are read in place; a deflated one is inflated once (bounded by ZIP_LIMITS).
      const stored = zip.isStored(entry);
      if (!stored && !inflated.has(entry.name)) inflated.set(entry.name, zip.readEntry(entry));
      const location: StridedLocation = {
        fd: stored ? zip.descriptor : inflated.get(entry.name)!,
        base: stored ? zip.dataOffset(entry) : 0,
        storageElements: ref.storage.numel,
        storageOffset: ref.storageOffset,
        dtype: ref.storage.dtype,
        shape: ref.shape,
        stride: ref.stride,
      };
      checkStridedBounds(location, `${file}: ${name}`);
      this.locations.set(name, location);
      this.tensors.set(name, { name, dtype: ref.storage.dtype, shape: ref.shape });
    }
  }

  readRows(name: string, first: number, count: number): Float32Array {
    const loc = this.locations.get(name);
    if (!loc) throw new XglmError('ERR_XGLM_CONVERT', `no tensor ${name} in ${this.description}`);
    return readStridedRows(loc, first, count);
  }

  sameData(a: string, b: string): boolean {
    const x = this.refs.get(a);
    const y = this.refs.get(b);
    return (
      !!x &&
      !!y &&
      x.storage === y.storage &&
      x.storageOffset === y.storageOffset &&
      x.shape.join() === y.shape.join() &&
      x.stride.join() === y.stride.join()
    );
  }

  close(): void {
    this.zip.close();
    this.locations.clear();
  }
}

/**
 * Opens a torch.save zip checkpoint without executing anything in it.
 * @throws XglmError ERR_XGLM_UNSAFE_PICKLE, ERR_XGLM_UNSAFE_ARCHIVE, ERR_XGLM_CONVERT.
 */
export function openPytorchCheckpoint(file: string): TensorSource {
  const zip = ZipReader.open(file);
  try {
    return new PytorchSource(zip, file);
  } catch (err) {
    zip.close();
    throw err;
  }
}

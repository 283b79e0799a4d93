/**
 * GGUF → GGUF re-encoding (`xglm quantize IN OUT TYPE`): same metadata (with the new
 * general.file_type), same tensors in the same order, each re-encoded with the type that
 * convert() would choose. Tensors must be F32, F16 or BF16 in the input unless they already
 * have the target type (then their bytes are copied): ggml cannot requantize without loss.
 */
import { XglmError } from '../errors.js';
import { GgufReader } from '../gguf/reader.js';
import { GgmlType, type GgufKv, GgufValueType, ggmlTypeName } from '../gguf/types.js';
import { kv } from '../gguf/writer.js';
import type { TypeFallback } from './convert.js';
import { validateCommonOptions } from './convert.js';
import { type ProgressEvent, type TensorJob, asXglmError, writeGgufFile } from './encode.js';
import { GGML_QUANTIZATION_VERSION, GGUF_KEYS } from './metadata.js';
import { OUTPUT_TYPES, type OutputTypeName, chooseTensorType, describeFallback, parseOutputType } from './output-types.js';
import { decodeFloats } from './source.js';

export interface QuantizeOptions {
  /** Stops the conversion between chunks (ERR_XGLM_ABORTED; no output file is left). */
  signal?: AbortSignal;
  /** Called after every chunk written and every tensor finished. */
  onProgress?: (event: ProgressEvent) => void;
  /** Called with one line per type fallback. */
  onWarning?: (message: string) => void;
  /**
   * Quantization threads.
   * @default os.availableParallelism()
   */
  threads?: number;
}

export interface QuantizeResult {
  file: string;
  type: OutputTypeName;
  fileType: number;
  tensors: Array<{ name: string; dims: number[]; type: number }>;
  fallbacks: TypeFallback[];
  bytes: number;
}

const FLOAT_INPUTS: ReadonlyMap<number, 'F32' | 'F16' | 'BF16'> = new Map([
  [GgmlType.F32, 'F32'],
  [GgmlType.F16, 'F16'],
  [GgmlType.BF16, 'BF16'],
]);

function blockCount(reader: GgufReader): number {
  const arch = reader.get(GGUF_KEYS.architecture);
  const n = typeof arch === 'string' ? reader.get(`${arch}.block_count`) : undefined;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1) {
    throw new XglmError('ERR_XGLM_GGUF_INVALID', `${reader.file}: no usable <arch>.block_count`);
  }
  return n;
}

/** Input metadata with general.file_type (and quantization_version) set for the new type. */
function retypedMetadata(source: readonly GgufKv[], fileType: number): GgufKv[] {
  const out = source.map((e) => (e.key === GGUF_KEYS.fileType ? kv.u32(GGUF_KEYS.fileType, fileType) : e));
  if (!out.some((e) => e.key === GGUF_KEYS.fileType)) out.push(kv.u32(GGUF_KEYS.fileType, fileType));
  const qv = out.findIndex((e) => e.key === GGUF_KEYS.quantizationVersion);
  if (qv < 0) out.push(kv.u32(GGUF_KEYS.quantizationVersion, GGML_QUANTIZATION_VERSION));
  else if (out[qv]!.type !== GgufValueType.UINT32 || out[qv]!.value !== GGML_QUANTIZATION_VERSION) {
    out[qv] = kv.u32(GGUF_KEYS.quantizationVersion, GGML_QUANTIZATION_VERSION);
  }
  return out;
}

/**
 * Re-encodes a GGUF file to another output type.
 * @throws XglmError ERR_XGLM_GGUF_INVALID, ERR_XGLM_UNSUPPORTED (quantized input), ERR_XGLM_INVALID_ARGUMENT.
 */
export async function quantize(inGguf: string, outGguf: string, type: OutputTypeName | string, options: QuantizeOptions = {}): Promise<QuantizeResult> {
  try {
    return await quantizeUnchecked(inGguf, outGguf, type, options);
  } catch (err) {
    throw asXglmError(err, String(outGguf));
  }
}

async function quantizeUnchecked(inGguf: string, outGguf: string, type: OutputTypeName | string, options: QuantizeOptions): Promise<QuantizeResult> {
  const output = parseOutputType(type);
  const threads = validateCommonOptions(options);
  const reader = GgufReader.open(inGguf);
  try {
    const nLayers = blockCount(reader);
    const fallbacks: TypeFallback[] = [];
    const jobs: TensorJob[] = reader.tensors.map((t) => {
      const choice = chooseTensorType(output, t.name, t.dims, nLayers);
      if (choice.fallbackFrom !== undefined) {
        fallbacks.push({ tensor: t.name, rowLength: t.dims[0]!, wanted: ggmlTypeName(choice.fallbackFrom), used: ggmlTypeName(choice.type) });
        options.onWarning?.(describeFallback(t.name, t.dims[0]!, choice));
      }
      const spec = { name: t.name, dims: t.dims, type: choice.type };
      if (t.type === choice.type) {
        return { spec, read: { bytes: (start: number, length: number) => reader.readTensorBytes(t, start, length) } };
      }
      const dtype = FLOAT_INPUTS.get(t.type);
      if (!dtype) {
        throw new XglmError('ERR_XGLM_UNSUPPORTED', `${inGguf}: tensor ${t.name} is ${ggmlTypeName(t.type)}; re-quantizing a quantized tensor to ${ggmlTypeName(choice.type)} is not supported`, {
          hint: 'quantize from an F32, F16 or BF16 GGUF, or convert the HuggingFace checkpoint directly',
        });
      }
      const rowLength = t.dims[0] ?? 1;
      const rowBytes = rowLength * (dtype === 'F32' ? 4 : 2);
      return {
        spec,
        read: {
          rows: (first: number, count: number) => {
            const out = new Float32Array(count * rowLength);
            decodeFloats(dtype, reader.readTensorBytes(t, first * rowBytes, count * rowBytes), out);
            return out;
          },
        },
      };
    });
    const fileType = OUTPUT_TYPES[output].fileType;
    const bytes = await writeGgufFile(outGguf, retypedMetadata(reader.kv, fileType), jobs, threads, options.onProgress, options.signal);
    return {
      file: outGguf,
      type: output,
      fileType,
      tensors: jobs.map((j) => ({ name: j.spec.name, dims: j.spec.dims, type: j.spec.type })),
      fallbacks,
      bytes,
    };
  } finally {
    reader.close();
  }
}

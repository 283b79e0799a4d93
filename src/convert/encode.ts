/**
 * The streaming core shared by convert() and quantize(): for each output tensor, read a bounded
 * number of float32 rows, encode them to the tensor's ggml type (F32 as is; everything else
 * through ggml's quantize functions in the addon, on native threads), append to the GGUF file.
 * Peak memory is a few chunks, whatever the model size.
 */
import os from 'node:os';
import { XglmError } from '../errors.js';
import { GgmlType, ggmlTensorBytes } from '../gguf/types.js';
import type { GgufKv } from '../gguf/types.js';
import { GgufWriter, type GgufTensorSpec } from '../gguf/writer.js';
import { native } from '../native.js';

/** Float32 elements per chunk: 16 MiB of input, whatever the row length. */
export const CHUNK_ELEMENTS = 4 * 1024 * 1024;

export interface ProgressEvent {
  /** The tensor being written. */
  tensor: string;
  tensorsDone: number;
  tensorsTotal: number;
  bytesWritten: number;
  bytesTotal: number;
}

export interface TensorJob {
  spec: GgufTensorSpec;
  /** Rows [first, first + count) as float32 (row length = spec.dims[0]); or raw bytes to copy. */
  read: { rows: (first: number, count: number) => Float32Array } | { bytes: (start: number, length: number) => Uint8Array };
}

/** I/O failures (disk full, file removed underneath) become ERR_XGLM_CONVERT; XglmErrors pass. */
export function asXglmError(err: unknown, file: string): XglmError {
  if (err instanceof XglmError) return err;
  return new XglmError('ERR_XGLM_CONVERT', `converting to ${file} failed: ${(err as Error)?.message ?? String(err)}`, {
    cause: err,
    hint: 'check free disk space and that the input files are not changing during the conversion',
  });
}

export function defaultThreads(): number {
  return Math.max(1, os.availableParallelism());
}

/** Encodes `nRows` float32 rows to `type`. */
export async function encodeRows(type: number, rows: Float32Array, nRows: number, rowLength: number, threads: number): Promise<Uint8Array> {
  if (type === GgmlType.F32) return new Uint8Array(rows.buffer, rows.byteOffset, rows.byteLength);
  const addon = native();
  const out = new Uint8Array(addon.rowSize(type, rowLength) * nRows);
  const written = await addon.quantizeRows(type, rows, out, nRows, rowLength, threads);
  if (written !== out.length) {
    throw new XglmError('ERR_XGLM_CONVERT', `quantizing ${nRows} rows wrote ${written} bytes, expected ${out.length}`);
  }
  return out;
}

/**
 * Writes a GGUF file: the metadata, then every job's tensor; on any failure the partial file
 * is removed (the writer renames it into place only when complete). Returns the file's size.
 */
export async function writeGgufFile(
  outFile: string,
  metadata: readonly GgufKv[],
  jobs: readonly TensorJob[],
  threads: number,
  onProgress: ((event: ProgressEvent) => void) | undefined,
  signal?: AbortSignal,
): Promise<number> {
  const writer = await GgufWriter.create(outFile, metadata, jobs.map((j) => j.spec));
  try {
    await writeTensorJobs(writer, jobs, threads, onProgress, signal);
    await writer.finish();
  } catch (err) {
    await writer.abort();
    throw err;
  }
  return writer.layout.fileSize;
}

/**
 * Writes every job's tensor, in order, into an open writer whose specs match the jobs.
 * One chunk is in flight: while ggml encodes and the file receives chunk i, this thread reads
 * chunk i + 1. Peak memory is two chunks.
 */
export async function writeTensorJobs(
  writer: GgufWriter,
  jobs: readonly TensorJob[],
  threads: number,
  onProgress: ((event: ProgressEvent) => void) | undefined,
  signal?: AbortSignal,
): Promise<void> {
  const bytesTotal = writer.layout.fileSize;
  const report = (tensor: string, tensorsDone: number) =>
    onProgress?.({ tensor, tensorsDone, tensorsTotal: jobs.length, bytesWritten: writer.bytesWritten, bytesTotal });
  let inFlight: Promise<void> | undefined;
  const checkAborted = () => {
    if (signal?.aborted) throw new XglmError('ERR_XGLM_ABORTED', `writing ${writer.file} was aborted`, { cause: signal.reason });
  };
  const submit = async (bytes: Promise<Uint8Array>, after: () => void) => {
    // Handle the result at once: it may fail while we wait for the previous chunk.
    const settled = bytes.then(
      (b) => ({ b }),
      (e: unknown) => ({ e }),
    );
    if (inFlight) await inFlight;
    checkAborted();
    inFlight = settled
      .then((r) => {
        if ('e' in r) throw r.e;
        return writer.write(r.b);
      })
      .then(after);
  };
  try {
    checkAborted();
    for (let j = 0; j < jobs.length; j++) {
      const { spec, read } = jobs[j]!;
      const rowLength = spec.dims[0] ?? 1;
      let rows = 1;
      for (let d = 1; d < spec.dims.length; d++) rows *= spec.dims[d]!;
      const total = ggmlTensorBytes(spec.type, spec.dims)!;
      if (total === 0) {
        await submit(Promise.resolve(new Uint8Array(0)), () => report(spec.name, j + 1));
      } else if ('bytes' in read) {
        const step = CHUNK_ELEMENTS * 4;
        for (let start = 0; start < total; start += step) {
          const last = start + step >= total;
          await submit(Promise.resolve(read.bytes(start, Math.min(step, total - start))), () => report(spec.name, last ? j + 1 : j));
        }
      } else {
        const rowsPerChunk = Math.max(1, Math.floor(CHUNK_ELEMENTS / Math.max(1, rowLength)));
        for (let first = 0; first < rows; first += rowsPerChunk) {
          const count = Math.min(rowsPerChunk, rows - first);
          const f32 = read.rows(first, count);
          if (f32.length !== count * rowLength) {
            throw new XglmError('ERR_XGLM_CONVERT', `${spec.name}: got ${f32.length} values for ${count} rows of ${rowLength}`);
          }
          const last = first + count >= rows;
          await submit(encodeRows(spec.type, f32, count, rowLength, threads), () => report(spec.name, last ? j + 1 : j));
        }
      }
    }
    if (inFlight) await inFlight;
  } catch (err) {
    // The chunk in flight may fail too; its error is the same story, and must not go unhandled.
    await inFlight?.catch(() => undefined);
    throw err;
  }
}

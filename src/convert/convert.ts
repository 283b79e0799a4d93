/**
 * HuggingFace XGLM checkpoint folder → GGUF file, tensor by tensor.
 *
 *   config.json                      → hyperparameters (validated field by field)
 *   sentencepiece.bpe.model          → tokenizer.ggml.* (fairseq id order), or tokenizer.json
 *   model.safetensors[.index.json]   → tensors (or pytorch_model.bin, read without executing it)
 */
import fs from 'node:fs';
import path from 'node:path';
import { XglmError } from '../errors.js';
import { type GgmlType, ggmlTypeName } from '../gguf/types.js';
import { parseSentencePieceModel } from '../tokenizer/spm-model.js';
import { vocabularyFromTokenizerJson } from '../tokenizer/loaders.js';
import { xglmVocabularyFromSentencePiece } from '../tokenizer/xglm-vocab.js';
import { type XglmHParams, readXglmConfig } from './config.js';
import { type ProgressEvent, type TensorJob, asXglmError, defaultThreads, writeGgufFile } from './encode.js';
import { type GgufVocabulary, xglmMetadata } from './metadata.js';
import { OUTPUT_TYPES, type OutputTypeName, chooseTensorType, describeFallback, parseOutputType } from './output-types.js';
import { openPytorchCheckpoint } from './pytorch.js';
import { openSafetensors, openShardedSafetensors } from './safetensors.js';
import { positionEmbeddingRows } from './sinusoid.js';
import type { TensorSource } from './source.js';
import { type PlannedTensor, TIED_OUTPUT, planXglmTensors } from './xglm-layout.js';

export type { ProgressEvent } from './encode.js';

export interface ConvertOptions {
  /**
   * Output type: f32, f16, bf16, q8_0, q6_k, q5_k_m, q5_0, q4_k_m, q4_0.
   * @default 'f16'
   */
  type?: OutputTypeName | string;
  /** Stops the conversion between chunks (ERR_XGLM_ABORTED; no output file is left). */
  signal?: AbortSignal;
  /** Called after every chunk written (bytes) and every tensor finished. */
  onProgress?: (event: ProgressEvent) => void;
  /** Called with one line per notable event (a type fallback). */
  onWarning?: (message: string) => void;
  /**
   * Which weights to read when the folder has several.
   * @default 'auto' (model.safetensors.index.json, then model.safetensors, then pytorch_model.bin)
   */
  weights?: 'auto' | 'safetensors' | 'pytorch';
  /**
   * `general.name`.
   * @default the last part of config.json's `_name_or_path`, else the folder name
   */
  name?: string;
  /**
   * Quantization threads.
   * @default os.availableParallelism()
   */
  threads?: number;
}

export interface TypeFallback {
  tensor: string;
  rowLength: number;
  wanted: string;
  used: string;
}

export interface ConvertResult {
  file: string;
  type: OutputTypeName;
  /** `general.file_type`. */
  fileType: number;
  /** Weights file(s) read. */
  source: string;
  tensors: Array<{ name: string; dims: number[]; type: GgmlType }>;
  /** Checkpoint tensors deliberately not converted (tied lm_head, sinusoid buffers). */
  ignored: string[];
  fallbacks: TypeFallback[];
  bytes: number;
}

function convertError(message: string, hint?: string): XglmError {
  return new XglmError('ERR_XGLM_CONVERT', message, hint ? { hint } : {});
}

export function validateCommonOptions(options: { onProgress?: unknown; onWarning?: unknown; threads?: unknown; signal?: unknown }): number {
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) {
    throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', 'signal must be an AbortSignal');
  }
  if (options.onProgress !== undefined && typeof options.onProgress !== 'function') {
    throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', 'onProgress must be a function');
  }
  if (options.onWarning !== undefined && typeof options.onWarning !== 'function') {
    throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', 'onWarning must be a function');
  }
  const threads = options.threads ?? defaultThreads();
  if (typeof threads !== 'number' || !Number.isInteger(threads) || threads < 1 || threads > 256) {
    throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `threads must be an integer in 1..256, got ${String(threads)}`);
  }
  return threads;
}

/** Opens the checkpoint's weights. */
export function openWeights(dir: string, which: ConvertOptions['weights'] = 'auto'): TensorSource {
  const file = (name: string) => path.join(dir, name);
  const exists = (name: string) => fs.existsSync(file(name));
  if (which !== 'pytorch') {
    if (exists('model.safetensors.index.json')) return openShardedSafetensors(file('model.safetensors.index.json'));
    if (exists('model.safetensors')) return openSafetensors(file('model.safetensors'));
    if (which === 'safetensors') throw convertError(`${dir} has no model.safetensors`);
  }
  if (exists('pytorch_model.bin')) return openPytorchCheckpoint(file('pytorch_model.bin'));
  if (exists('pytorch_model.bin.index.json')) {
    throw new XglmError('ERR_XGLM_UNSUPPORTED', `${dir}: sharded pytorch_model-*.bin checkpoints are not supported`, {
      hint: 'use the model.safetensors files of the repository instead',
    });
  }
  throw convertError(`${dir} has no weights (model.safetensors, model.safetensors.index.json or pytorch_model.bin)`, 'pass the folder of a HuggingFace XGLM checkpoint');
}

/**
 * The XGLM vocabulary of a checkpoint folder: from sentencepiece.bpe.model, else from a
 * HuggingFace tokenizer.json (Unigram model with its Precompiled normalizer).
 */
export function readVocabulary(dir: string): GgufVocabulary {
  const spm = path.join(dir, 'sentencepiece.bpe.model');
  const tokenizerJson = path.join(dir, 'tokenizer.json');
  if (fs.existsSync(spm)) {
    return xglmVocabularyFromSentencePiece(parseSentencePieceModel(fs.readFileSync(spm)));
  }
  if (fs.existsSync(tokenizerJson)) {
    const { vocabulary: v } = vocabularyFromTokenizerJson(fs.readFileSync(tokenizerJson, 'utf8'));
    return {
      tokens: [...v.tokens],
      scores: v.scores instanceof Float32Array ? v.scores : Float32Array.from(v.scores),
      tokenTypes: v.tokenTypes instanceof Int32Array ? v.tokenTypes : Int32Array.from(v.tokenTypes),
      precompiledCharsmap: v.precompiledCharsmap,
      addSpacePrefix: v.addSpacePrefix,
      removeExtraWhitespaces: v.removeExtraWhitespaces,
    };
  }
  throw convertError(`${dir} has neither sentencepiece.bpe.model nor tokenizer.json`, 'copy sentencepiece.bpe.model from the model repository (facebook/xglm-*) into the folder');
}

/** Reads rows of a planned tensor: rows of its parts one after another, or generated. */
function plannedRows(source: TensorSource, hp: XglmHParams, planned: PlannedTensor, first: number, count: number): Float32Array {
  if (planned.generated === 'position_embd') return positionEmbeddingRows(hp.nEmbd, first, count);
  if (planned.parts.length === 1) return source.readRows(planned.parts[0]!.source, first, count);
  if (planned.dims.length === 1) {
    // A vector joined from several: one row, each part a segment of it.
    const out = new Float32Array(planned.dims[0]!);
    let at = 0;
    for (const part of planned.parts) {
      const segment = source.readRows(part.source, 0, 1);
      out.set(segment, at);
      at += segment.length;
    }
    return out;
  }
  const rowLength = planned.dims[0]!;
  const out = new Float32Array(count * rowLength);
  let partStart = 0;
  for (const part of planned.parts) {
    const from = Math.max(first, partStart);
    const to = Math.min(first + count, partStart + part.rows);
    if (from < to) out.set(source.readRows(part.source, from - partStart, to - from), (from - first) * rowLength);
    partStart += part.rows;
  }
  return out;
}

/** lm_head.weight may only be dropped if it is the embedding: same storage, or equal values. */
function checkTiedOutput(source: TensorSource, hp: XglmHParams): void {
  if (!source.tensors.has(TIED_OUTPUT) || source.sameData(TIED_OUTPUT, 'model.embed_tokens.weight')) return;
  const rowsPerChunk = Math.max(1, Math.floor((1 << 22) / hp.nEmbd));
  for (let first = 0; first < hp.vocabSize; first += rowsPerChunk) {
    const count = Math.min(rowsPerChunk, hp.vocabSize - first);
    const a = source.readRows(TIED_OUTPUT, first, count);
    const b = source.readRows('model.embed_tokens.weight', first, count);
    if (!Buffer.from(a.buffer).equals(Buffer.from(b.buffer))) {
      throw new XglmError('ERR_XGLM_UNSUPPORTED', `${TIED_OUTPUT} differs from model.embed_tokens.weight (row ${first}..${first + count})`, {
        hint: 'XGLM ties the output projection to the embedding; an untied fine-tune cannot be stored in this GGUF layout',
      });
    }
  }
}

/**
 * Converts a HuggingFace XGLM checkpoint folder to a GGUF file (the layout docs/converting.md describes).
 * The output is written under `<outFile>.partial` and renamed at the end.
 * @throws XglmError ERR_XGLM_CONVERT, ERR_XGLM_UNSAFE_PICKLE, ERR_XGLM_UNSAFE_ARCHIVE,
 *   ERR_XGLM_TOKENIZER, ERR_XGLM_UNSUPPORTED, ERR_XGLM_INVALID_ARGUMENT.
 */
export async function convert(hfDir: string, outFile: string, options: ConvertOptions = {}): Promise<ConvertResult> {
  try {
    return await convertUnchecked(hfDir, outFile, options);
  } catch (err) {
    throw asXglmError(err, String(outFile));
  }
}

async function convertUnchecked(hfDir: string, outFile: string, options: ConvertOptions): Promise<ConvertResult> {
  if (typeof hfDir !== 'string' || typeof outFile !== 'string') {
    throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', 'convert(hfDir, outFile, options) takes two paths');
  }
  const type = parseOutputType(options.type ?? 'f16');
  const threads = validateCommonOptions(options);
  if (options.weights !== undefined && !['auto', 'safetensors', 'pytorch'].includes(options.weights)) {
    throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `weights must be 'auto', 'safetensors' or 'pytorch'`);
  }
  const hp = readXglmConfig(path.join(hfDir, 'config.json'));
  const vocab = readVocabulary(hfDir);
  if (vocab.tokens.length !== hp.vocabSize) {
    throw convertError(
      `the tokenizer has ${vocab.tokens.length} tokens, config.json says vocab_size ${hp.vocabSize}`,
      'the tokenizer does not belong to this checkpoint',
    );
  }
  const name = options.name ?? path.basename(hp.nameOrPath ?? path.resolve(hfDir));

  const source = openWeights(hfDir, options.weights);
  try {
    const { plan, ignored } = planXglmTensors(hp, source.tensors);
    checkTiedOutput(source, hp);
    const fallbacks: TypeFallback[] = [];
    const jobs: TensorJob[] = plan.map((planned) => {
      const choice = chooseTensorType(type, planned.name, planned.dims, hp.nLayer);
      if (choice.fallbackFrom !== undefined) {
        fallbacks.push({ tensor: planned.name, rowLength: planned.dims[0]!, wanted: ggmlTypeName(choice.fallbackFrom), used: ggmlTypeName(choice.type) });
        options.onWarning?.(describeFallback(planned.name, planned.dims[0]!, choice));
      }
      return {
        spec: { name: planned.name, dims: planned.dims, type: choice.type },
        read: { rows: (first: number, count: number) => plannedRows(source, hp, planned, first, count) },
      };
    });
    const metadata = xglmMetadata(hp, vocab, OUTPUT_TYPES[type].fileType, name);
    const bytes = await writeGgufFile(outFile, metadata, jobs, threads, options.onProgress, options.signal);
    return {
      file: outFile,
      type,
      fileType: OUTPUT_TYPES[type].fileType,
      source: source.description,
      tensors: jobs.map((j) => ({ name: j.spec.name, dims: j.spec.dims, type: j.spec.type as GgmlType })),
      ignored,
      fallbacks,
      bytes,
    };
  } finally {
    source.close();
  }
}

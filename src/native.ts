/**
 * Loads the native addon and types its whole surface once.
 *
 * Load order (node-gyp-build's): `XGLM_ADDON_PATH` when set; else a local build
 * (build/Release/xglm.node), which exists only where someone built from source; else the
 * prebuild for this platform (prebuilds/<platform>-<arch>/), which an installed package uses.
 * The addon is loaded on first use, so tokenizer- or GGUF-only users never need it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { XglmError } from './errors.js';

/** Which ggml CPU code runs in this process. */
export interface BackendInfo {
  /** `native` for a build made for this machine; else the ggml variant (`haswell`, `x64`, …). */
  variant: string;
  /** True when the CPU variant was picked at run time from several shipped libraries. */
  dynamic: boolean;
  /** CPU features the chosen code uses (`AVX2`, `FMA`, …). */
  features: string[];
  /** Variant libraries found beside the addon (empty for a static build). */
  available: string[];
  /**
   * The code path of xglm-node's own ops (attention, decode products, GELU), which follows the
   * ggml variant in use: `avx512` or `avx2` where that variant runs AVX2+FMA+F16C code, `none`
   * otherwise (ggml's ops only, e.g. under `XGLM_CPU_VARIANT=x64` or on arm64).
   */
  kernels: 'avx512' | 'avx2' | 'none';
  ggmlVersion: string;
}

export interface GgmlTypeInfo {
  name: string;
  blockSize: number;
  typeSize: number;
  quantized: boolean;
}

/** The native surface, as addon.cpp registers it. */
export interface NativeAddon {
  backendInfo(): BackendInfo;
  ggmlTypeInfo(type: number): GgmlTypeInfo;
  rowSize(type: number, nPerRow: number): number;
  /** Quantizes `nRows` rows of `src` into `dst` on native threads; resolves with the bytes written. */
  quantizeRows(type: number, src: Float32Array, dst: Uint8Array, nRows: number, nPerRow: number, nThreads: number): Promise<number>;
  /**
   * Decodes `nRows` rows of `type` (`src` holds exactly nRows × rowSize(type, nPerRow) bytes) to
   * float32 with ggml's own `to_float` for the type; synchronous. For tests and tools.
   */
  dequantizeRows(type: number, src: Uint8Array, nRows: number, nPerRow: number): Float32Array;
  /** XGLM weights loaded from a GGUF file (native/model.cpp). */
  Model: NativeModelClass;
  /** KV cache + compute thread over a Model (native/context.cpp). */
  Context: NativeContextClass;
}

/** Hyperparameters of a loaded model (GGUF `xglm.*` keys and tensor shapes). */
export interface NativeHParams {
  nVocab: number;
  /** max_position_embeddings: positions are 0 .. nCtxTrain-1. */
  nCtxTrain: number;
  nEmbd: number;
  nFf: number;
  nLayer: number;
  nHead: number;
  normEps: number;
  embdScale: number;
  /** general.file_type, -1 when absent. */
  fileType: number;
  name: string;
}

export interface NativeTensorInfo {
  name: string;
  /** ggml type name (`f32`, `q4_0`, …). */
  type: string;
  /** `mmap` (read from the file without a copy), `CPU_REPACK` (copied into ggml's interleaved layout) or `computed`. */
  buffer: string;
  /** ggml order: shape[0] is the row length. */
  shape: number[];
}

export interface NativeModelClass {
  /** Maps a GGUF file and validates it; rejects with code ERR_XGLM_MODEL_LOAD and a message that says what to do. */
  load(path: string, options?: { useRepack?: boolean }, onProgress?: (fraction: number) => void): Promise<NativeModel>;
}

export interface NativeModel {
  readonly hparams: NativeHParams;
  /** Bytes of the mapped file. */
  readonly mappedBytes: number;
  /** Bytes copied out of the file (repacked weights, computed position table). */
  readonly ownedBytes: number;
  tensors(): NativeTensorInfo[];
  /** Drops this handle's weights; contexts made from the model keep them until they are disposed. */
  dispose(): void;
}

export type NativeKvType = 'f16' | 'f32' | 'q8_0';

export interface NativeContextOptions {
  /** KV cells shared by all sequences; 0 or absent = the model's nCtxTrain. */
  contextSize?: number;
  /** Tokens per graph evaluation; longer batches are split (and can be aborted between parts). */
  batchSize?: number;
  /** Logits rows per graph evaluation (bounds the n_vocab × rows output buffer). */
  outputsPerBatch?: number;
  /** Compute threads; 0 or absent = physical cores. */
  threads?: number;
  kvType?: NativeKvType;
  /** Keep each layer's residual stream of the last evaluate() for getActivation (tests). */
  keepActivations?: boolean;
}

export interface NativeSamplerParams {
  /** 0 = greedy. */
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  typicalP?: number;
  repeatPenalty?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  /** The window of recent tokens the penalties apply to. */
  penaltyTokens?: Int32Array;
  logitBiasIds?: Int32Array;
  logitBiasValues?: Float32Array;
  /** Reseeds the context's generator (std::mt19937_64) before this draw. */
  seed?: number;
}

/** Options of NativeContext.generate (all required; the engine layer validates them). */
export interface NativeGenerateOptions {
  /** Position of the first generated token. */
  position: number;
  seqId: number;
  /** Draw k uses seed mix(seed, firstStep + k). */
  seed: number;
  firstStep: number;
  /** Tokens to draw at most. */
  maxSteps: number;
  /** Stop (after streaming the token) once a token would be evaluated at this position. */
  positionLimit: number;
  /** Stop after streaming this token; -1 = never. */
  eosToken: number;
  /** How many recent tokens (params.penaltyTokens, then the generated ones) the penalties see; 0 = none. */
  penaltyWindow: number;
}

export interface NativeLogprobs {
  /** log P(targets[i]) at row i; NaN where the target was -1. */
  logprobs: Float32Array;
  /** [rows × topK] ids, most likely first. */
  topIds: Int32Array;
  /** [rows × topK] log-probabilities. */
  topLogprobs: Float32Array;
}

export interface NativeContextClass {
  create(model: NativeModel, options?: NativeContextOptions): Promise<NativeContext>;
}

/**
 * Every method but abort() queues work on the context's own native thread and settles in
 * call order. Batch indices refer to the tokens of the last evaluate().
 */
export interface NativeContext {
  /** computeMs: wall time inside ggml's graph computation so far (what surrounds it is overhead). */
  readonly info: { contextSize: number; threads: number; computeMs: number };
  /** Adds the tokens to the KV cache; keeps logits for tokens with wantLogits[i] != 0. */
  evaluate(tokens: Int32Array, positions: Int32Array, seqIds: Int32Array, wantLogits: Uint8Array): Promise<void>;
  sample(batchIndex: number, params: NativeSamplerParams): Promise<number>;
  /**
   * Draws from row batchIndex, streams the token, evaluates it, draws again… on the context
   * thread. onToken runs on the JS thread; returning true stops the loop before its next
   * evaluation. endPosition: one past the last position evaluated.
   */
  generate(
    batchIndex: number,
    params: NativeSamplerParams,
    options: NativeGenerateOptions,
    onToken: (token: number, computeMs: number) => boolean | void,
  ): Promise<{ steps: number; endPosition: number }>;
  logprobs(batchIndices: Int32Array, targets: Int32Array, topK: number): Promise<NativeLogprobs>;
  getLogits(batchIndex: number): Promise<Float32Array>;
  getActivation(name: string): Promise<Float32Array | null>;
  kvClear(): Promise<void>;
  /** Removes positions [p0, p1) of a sequence (p1 < 0: to the end). */
  kvRemove(seqId: number, p0: number, p1: number): Promise<void>;
  /** Makes positions [p0, p1) of src visible to dst too (cells are shared, not copied), replacing dst's own in that range. */
  kvCopy(srcSeqId: number, dstSeqId: number, p0: number, p1: number): Promise<void>;
  /** The largest cached position of a sequence, -1 when none. */
  kvSeqPosMax(seqId: number): Promise<number>;
  /** Aborts the running evaluation and all work queued before this call (they reject with ERR_XGLM_ABORTED). */
  abort(): void;
  dispose(): Promise<void>;
}

/** The package root (this file lives in src/ or dist/). */
export const packageRoot = path.resolve(__dirname, '..');

export const BUILD_FROM_SOURCE_COMMAND = 'npm run build:native';

function findPrebuild(): string | undefined {
  const dir = path.join(packageRoot, 'prebuilds', `${process.platform}-${process.arch}`);
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return undefined;
  }
  const node = names.filter((n) => n.endsWith('.node')).sort()[0];
  return node ? path.join(dir, node) : undefined;
}

/** The addon files to try, in order. */
export function addonCandidates(): string[] {
  const override = process.env.XGLM_ADDON_PATH;
  if (override) return [path.resolve(override)];
  const local = path.join(packageRoot, 'build', 'Release', 'xglm.node');
  return [fs.existsSync(local) ? local : undefined, findPrebuild()].filter((p): p is string => p !== undefined);
}

let addon: NativeAddon | undefined;

/** The loaded addon; throws an XglmError that names the build command when none loads. */
export function native(): NativeAddon {
  if (addon) return addon;
  const candidates = addonCandidates();
  const failures: string[] = [];
  for (const file of candidates) {
    try {
      addon = require(file) as NativeAddon;
      return addon;
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'ERR_XGLM_BACKEND') {
        throw new XglmError('ERR_XGLM_BACKEND', e.message, { cause: err, hint: 'unset XGLM_CPU_VARIANT or reinstall xglm-node' });
      }
      failures.push(`${path.relative(packageRoot, file)}: ${e.message}`);
    }
  }
  const tried = failures.length ? ` Tried: ${failures.join('; ')}.` : '';
  throw new XglmError(
    'ERR_XGLM_NATIVE_LOAD',
    `no usable native addon for ${process.platform}-${process.arch} (Node-API 8).${tried}`,
    { hint: `build it from source with '${BUILD_FROM_SOURCE_COMMAND}' in ${packageRoot} (needs cmake, a C++17 compiler and git)` },
  );
}

/**
 * Loads the native addon and types its whole surface once.
 *
 * Load order (addonCandidates()): `XGLM_ADDON_PATH` when set (and nothing else); else a local
 * build (build/Release/xglm.node, or a clone's prebuilds/<platform>-<arch>/), which exists only
 * where someone built from source; else the platform package (`@xglm-node/<platform>-<arch>`,
 * an optional dependency npm installs only on its platform), which an installed package uses.
 * The addon is loaded on first use, so tokenizer- or GGUF-only users never need it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { XglmError } from './errors.js';
import { packageRoot } from './paths.js';
import type { ContextOptions } from './context.js';
import type { SamplerSettings } from './sampler.js';

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
  /**
   * The kernel plan a context created now gets (decided once per context from the ggml variant
   * and the environment: `XGLM_KERNELS`, `XGLM_NO_CUSTOM_*`): per kind of graph node, whether
   * xglm-node's own op runs (`impl: 'xglm'`) and which kernel, or ggml's node and why.
   */
  kernelPlan: KernelPlan;
  ggmlVersion: string;
  /** The compiler that built ggml and the addon, e.g. `Clang 19.1.7` or `GNU 12.2.0` (absent from older builds). */
  compiler?: string;
}

export interface KernelPlan {
  /** The ops' code path, as `kernels`. */
  isa: 'avx512' | 'avx2' | 'none';
  /** Whether the decode products take their AVX-512 VNNI forms. */
  vnni: boolean;
  ops: Array<{ node: string; impl: 'xglm' | 'ggml'; detail: string }>;
  /** Set when `XGLM_KERNELS` has a value no context accepts (creating one fails). */
  error?: string;
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
  /** Stops the threads of this thread's contexts before the process exits (process 'exit'). */
  stopForExit(): void;
  ggmlTypeInfo(type: number): GgmlTypeInfo;
  rowSize(type: number, nPerRow: number): number;
  /** Quantizes `nRows` rows of `src` into `dst` on native threads; resolves with the bytes written. */
  quantizeRows(type: number, src: Float32Array, dst: Uint8Array, nRows: number, nPerRow: number, nThreads: number): Promise<number>;
  /**
   * Decodes `nRows` rows of `type` (`src` holds exactly nRows × rowSize(type, nPerRow) bytes) to
   * float32 with ggml's own `to_float` for the type; synchronous. For tests and tools.
   */
  dequantizeRows(type: number, src: Uint8Array, nRows: number, nPerRow: number): Float32Array;
  /** XGLM weights loaded from a GGUF file (native/addon/model.cpp). */
  Model: NativeModelClass;
  /** KV cache + compute thread over a Model (native/addon/context.cpp). */
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

/** KV-cache element types the addon accepts. */
export const KV_TYPES = ['f16', 'f32', 'q8_0'] as const;
export type KvType = (typeof KV_TYPES)[number];

/**
 * Context.create's options, as the engine layer passes them (checked). Absent: the addon's
 * fallback (contextSize, threads: 0 = the model's context length, the physical cores).
 */
export interface NativeContextOptions extends Pick<ContextOptions, 'contextSize' | 'batchSize' | 'outputsPerBatch' | 'threads' | 'kvType'> {
  /** Keep each layer's residual stream of the last evaluate() for getActivation (tests). */
  keepActivations?: boolean;
}

/**
 * The sampler of one draw: every knob of SamplerOptions given (the engine layer resolves them
 * all; the addon's fallbacks never decide), the penalty window's tokens and the logit bias as arrays.
 */
export interface NativeSamplerParams extends Omit<SamplerSettings, 'penaltyWindow' | 'logitBias'> {
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
  /** KV cells held for the generated tokens while the stream runs (beside the prompt's). */
  reserve: number;
  /** When the prompt and `reserve` do not fit beside the running streams: wait for them (true) or fail with ERR_XGLM_CONTEXT_OVERFLOW. */
  waitForCells: boolean;
  /** The caller's id of this stream, for stopStream(). */
  streamId: number;
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
   * A stream of the context's scheduler: evaluates `prompt` at positions
   * options.position - prompt.length …, then draws, streams the token, evaluates it (in one
   * batch with the other running streams' tokens), draws again… on the context thread. Streams
   * on different sequences run concurrently; other calls run between their steps. onToken runs
   * on the JS thread; returning true stops the stream before its next evaluation.
   * endPosition: one past the last position evaluated.
   */
  generate(
    prompt: Int32Array,
    params: NativeSamplerParams,
    options: NativeGenerateOptions,
    onToken: (token: number, computeMs: number) => boolean | void,
    /** Called after each chunk of the prompt with the prompt tokens evaluated so far. */
    onPromptProgress?: (evaluated: number) => void,
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
  /** Aborts the running evaluation, every stream and all work queued before this call (they reject with ERR_XGLM_ABORTED). */
  abort(): void;
  /** Ends the generate() stream with this streamId before its next evaluation; the others run on. */
  stopStream(streamId: number): void;
  dispose(): Promise<void>;
}

export const BUILD_FROM_SOURCE_COMMAND = 'npm run build:native';

/** Where addonCandidates() looks; every field defaults to this process and package (tests set them). */
export interface AddonSearch {
  root?: string;
  env?: NodeJS.ProcessEnv;
  platform?: string;
  arch?: string;
  /** `glibc` or `musl` on Linux, undefined elsewhere. */
  libc?: string | undefined;
}

let libcCache: { value: string | undefined } | undefined;

/** `glibc` or `musl` on Linux (from the process report, as npm decides the `libc` field); else undefined. */
export function hostLibc(): string | undefined {
  if (libcCache) return libcCache.value;
  if (process.platform !== 'linux') return (libcCache = { value: undefined }).value;
  // A report takes ~10 ms: made once, without the network interfaces.
  const report = process.report as { excludeNetwork?: boolean; getReport(): object };
  const exclude = report.excludeNetwork;
  report.excludeNetwork = true;
  try {
    const header = (report.getReport() as { header?: { glibcVersionRuntime?: string } }).header;
    return (libcCache = { value: header?.glibcVersionRuntime ? 'glibc' : 'musl' }).value;
  } finally {
    report.excludeNetwork = exclude;
  }
}

/** The npm package that holds the prebuilt addon for a platform (scripts/platform-packages.js makes them). */
export function platformPackageName(platform: string = process.platform, arch: string = process.arch, libc: string | undefined = hostLibc()): string {
  return `@xglm-node/${platform}-${arch}${libc === 'musl' ? '-musl' : ''}`;
}

function findAddon(dir: string): string | undefined {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return undefined;
  }
  const node = names.includes('xglm.node') ? 'xglm.node' : names.filter((n) => n.endsWith('.node')).sort()[0];
  return node ? path.join(dir, node) : undefined;
}

/** The folder of an installed package, as `require` would find it from `root`; undefined when absent. */
function findPackage(name: string, root: string): string | undefined {
  try {
    return path.dirname(require.resolve(`${name}/package.json`, { paths: [root] }));
  } catch {
    return undefined;
  }
}

/** The addon files to try, in order. */
export function addonCandidates(search: AddonSearch = {}): string[] {
  const root = search.root ?? packageRoot;
  const override = (search.env ?? process.env).XGLM_ADDON_PATH;
  if (override) return [path.resolve(override)];
  const platform = search.platform ?? process.platform;
  const arch = search.arch ?? process.arch;
  const local = path.join(root, 'build', 'Release', 'xglm.node');
  const pkg = findPackage(platformPackageName(platform, arch, 'libc' in search ? search.libc : hostLibc()), root);
  return [
    fs.existsSync(local) ? local : undefined,
    findAddon(path.join(root, 'prebuilds', `${platform}-${arch}`)),
    pkg === undefined ? undefined : findAddon(pkg),
  ].filter((p): p is string => p !== undefined);
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
      // process.exit() tears the env down without running native cleanup hooks: stop every
      // context's thread while the env is still whole (see stop_for_exit in native/addon/context.cpp)
      const loaded = addon;
      process.once('exit', () => loaded.stopForExit());
      return addon;
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'ERR_XGLM_BACKEND') {
        throw new XglmError('ERR_XGLM_BACKEND', e.message, { cause: err, hint: 'unset XGLM_CPU_VARIANT or reinstall xglm-node' });
      }
      failures.push(`${path.relative(packageRoot, file)}: ${e.message}`);
    }
  }
  const hostC = hostLibc();
  const where = `${process.platform}-${process.arch}${hostC ? ` (${hostC})` : ''}`;
  const found = failures.length
    ? `none of the addons found loaded. Tried: ${failures.join('; ')}.`
    : `there is no local build and the platform package ${platformPackageName(process.platform, process.arch, hostC)} is not installed.`;
  throw new XglmError(
    'ERR_XGLM_NATIVE_LOAD',
    `no usable native addon for ${where}, Node-API 8: ${found}`,
    {
      hint:
        `prebuilt packages exist for linux-x64 and linux-arm64 (glibc) and win32-x64; npm installs the one that fits unless optional dependencies are omitted. ` +
        `Elsewhere, build from source: run '${BUILD_FROM_SOURCE_COMMAND}' in ${packageRoot} (it installs cmake-js on demand; needs cmake, a C++17 compiler and git)`,
    },
  );
}

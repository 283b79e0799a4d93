/**
 * The engine's model: a native Model (src/native.ts) behind the engine layer's checks
 * (./checks.ts). The public XglmModel (src/model.ts) wraps one; tests and tools use it directly.
 */
import nodePath from 'node:path';
import type { LoadModelOptions } from '../model.js';
import { KV_TYPES, native, type NativeContextOptions, type NativeHParams, type NativeModel, type NativeTensorInfo } from '../native.js';
import { call, checkInt, invalid } from './checks.js';
import { EngineContext } from './context.js';

/** The load options the engine implements (declared with the public LoadModelOptions). */
export type EngineModelOptions = Pick<LoadModelOptions, 'useRepack' | 'onProgress'>;

/** The context options the engine takes: the public ones it implements, and a test switch (as the addon takes them). */
export type EngineContextOptions = NativeContextOptions;

/** Maps a GGUF file (no copy of the weights) and validates it against the layout of docs/converting.md. */
export async function openEngineModel(path: string, options: EngineModelOptions = {}): Promise<EngineModel> {
  if (typeof path !== 'string' || path === '') throw invalid('model path must be a non-empty string');
  const m = await call(() =>
    native().Model.load(nativePath(path), { useRepack: options.useRepack ?? true }, options.onProgress ? (f) => options.onProgress!(f) : undefined),
  );
  return new EngineModel(m);
}

/**
 * The path as the addon opens it. On Windows, a path of MAX_PATH (260) characters or more is
 * given in its `\\?\` form (absolute, backslashes), which the wide file API takes at any
 * length; ggml opens the file to read its header with _wfopen, which does not add it.
 */
export function nativePath(path: string, platform: NodeJS.Platform = process.platform): string {
  if (platform !== 'win32') return path;
  const full = nodePath.win32.resolve(path);
  return full.length >= 260 ? nodePath.win32.toNamespacedPath(full) : path;
}

export class EngineModel {
  /** @internal */
  constructor(readonly native: NativeModel) {}

  get hparams(): NativeHParams {
    return this.native.hparams;
  }

  tensors(): NativeTensorInfo[] {
    return this.native.tensors();
  }

  async createContext(options: EngineContextOptions = {}): Promise<EngineContext> {
    const hp = this.hparams;
    const o: NativeContextOptions = {};
    if (options.contextSize !== undefined) o.contextSize = checkInt('contextSize', options.contextSize, 1, 1 << 24);
    if (options.batchSize !== undefined) o.batchSize = checkInt('batchSize', options.batchSize, 1, 1 << 16);
    if (options.outputsPerBatch !== undefined) o.outputsPerBatch = checkInt('outputsPerBatch', options.outputsPerBatch, 1, 1 << 16);
    if (options.threads !== undefined) o.threads = checkInt('threads', options.threads, 0, 512);
    else if (process.env.XGLM_THREADS) o.threads = checkInt('XGLM_THREADS', Number(process.env.XGLM_THREADS), 0, 512);
    if (options.kvType !== undefined) {
      if (!(KV_TYPES as readonly string[]).includes(options.kvType)) throw invalid(`kvType must be 'f16', 'f32' or 'q8_0', got ${String(options.kvType)}`);
      o.kvType = options.kvType;
    }
    if (options.keepActivations) o.keepActivations = true;
    const ctx = await call(() => native().Context.create(this.native, o));
    return new EngineContext(ctx, hp);
  }

  /** Releases this handle; contexts keep the weights until they are disposed. */
  dispose(): void {
    this.native.dispose();
  }
}

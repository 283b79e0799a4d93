/**
 * A loaded XGLM model: the native weights (mmap'd, shared by all contexts) and the
 * tokenizer read from the same GGUF file's metadata.
 */
import { XglmContext, type ContextOptions } from './context.js';
import { openEngineModel, type EngineModel } from './engine/model.js';
import { XglmError } from './errors.js';
import { GgufReader } from './gguf/index.js';
import { describeModelFile, type ModelFileInfo } from './model-info.js';
import type { NativeHParams, NativeTensorInfo } from './native.js';
import { Tokenizer, type DecodeOptions, type EncodeOptions } from './tokenizer/index.js';

export interface LoadModelOptions {
  /** Called with the loaded fraction, 0 to 1. */
  onProgress?: (fraction: number) => void;
  /**
   * Copy weights that ggml can repack (q4_0, q4_k, …) into its interleaved CPU layout, q8_0
   * layer weights into xglm-node's 8-row layout where the kernel plan has AVX-512 VNNI, and (on
   * Linux) a Q6_K output matrix into anonymous memory, which gets transparent huge pages: faster
   * matrix products; those bytes are then owned rather than shared with the page cache.
   * @default true
   */
  useRepack?: boolean;
  /** Aborts loading (the promise rejects with ERR_XGLM_ABORTED). */
  signal?: AbortSignal;
}

export interface ModelInfo extends ModelFileInfo {
  hparams: NativeHParams;
  /** Bytes of weights read straight from the mapped file. */
  mappedBytes: number;
  /** Bytes the model owns (repacked weights, computed tables). */
  ownedBytes: number;
}

function aborted(): XglmError {
  return new XglmError('ERR_XGLM_ABORTED', 'model loading was aborted');
}

export class XglmModel {
  readonly tokenizer: Tokenizer;
  private engineModel: EngineModel | undefined;
  private readonly contexts = new Set<XglmContext>();
  private readonly fileInfo: ModelFileInfo;

  private constructor(
    readonly file: string,
    engineModel: EngineModel,
    tokenizer: Tokenizer,
    fileInfo: ModelFileInfo,
  ) {
    this.engineModel = engineModel;
    this.tokenizer = tokenizer;
    this.fileInfo = fileInfo;
  }

  /** Loads a GGUF file (made by `xglm convert`, or llama.cpp's xglm layout). */
  static async load(file: string, options: LoadModelOptions = {}): Promise<XglmModel> {
    if (typeof file !== 'string' || file === '') {
      throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', 'the model path must be a non-empty string');
    }
    if (options.signal?.aborted) throw aborted();
    // Header checks and the tokenizer in TypeScript first: a wrong file fails fast, with
    // the reader's precise message, before the native loader maps anything.
    // One parse of the header serves both (256k vocabulary strings are worth reading once).
    const reader = GgufReader.open(file);
    let fileInfo: ModelFileInfo;
    let tokenizer: Tokenizer;
    try {
      fileInfo = describeModelFile(file, reader.header);
      if (fileInfo.architecture !== 'xglm') {
        throw new XglmError('ERR_XGLM_UNSUPPORTED', `${file} holds a '${fileInfo.architecture}' model, not XGLM`, {
          hint: 'xglm-node runs XGLM models only; convert one with `xglm convert` or `xglm pull facebook/xglm-564M`',
        });
      }
      tokenizer = tokenizerFromReader(reader);
    } finally {
      reader.close();
    }
    const engineModel = await openEngineModel(file, {
      ...(options.useRepack !== undefined ? { useRepack: options.useRepack } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    });
    if (options.signal?.aborted) {
      engineModel.dispose();
      throw aborted();
    }
    return new XglmModel(file, engineModel, tokenizer, fileInfo);
  }

  private engine(): EngineModel {
    if (!this.engineModel) throw new XglmError('ERR_XGLM_DISPOSED', 'the model was disposed', { hint: 'load it again' });
    return this.engineModel;
  }

  get info(): ModelInfo {
    const e = this.engine();
    return { ...this.fileInfo, hparams: e.hparams, mappedBytes: e.native.mappedBytes, ownedBytes: e.native.ownedBytes };
  }

  /** The model's context length (max_position_embeddings). */
  get contextLength(): number {
    return this.engine().hparams.nCtxTrain;
  }

  tensors(): NativeTensorInfo[] {
    return this.engine().tensors();
  }

  /** Token ids of `text`, starting with </s> (2) as XGLMTokenizer does. */
  tokenize(text: string, options?: EncodeOptions): number[] {
    return this.tokenizer.encode(text, options);
  }

  /** Text of token ids, as XGLMTokenizer.decode (special tokens skipped unless asked). */
  detokenize(ids: ArrayLike<number>, options?: DecodeOptions): string {
    return this.tokenizer.decode(ids, options);
  }

  /** A context: KV cache, compute thread and buffers. Several contexts run in parallel. */
  async createContext(options: ContextOptions = {}): Promise<XglmContext> {
    const ctx = await XglmContext.create(this, this.engine(), options, () => this.contexts.delete(ctx));
    if (!this.engineModel) {
      await ctx.dispose();
      throw new XglmError('ERR_XGLM_DISPOSED', 'the model was disposed while the context was being created');
    }
    this.contexts.add(ctx);
    return ctx;
  }

  get disposed(): boolean {
    return this.engineModel === undefined;
  }

  /**
   * Disposes every context of this model (their pending calls reject with ERR_XGLM_DISPOSED,
   * running generations end with finishReason 'abort'), then releases the weights.
   */
  async dispose(): Promise<void> {
    const e = this.engineModel;
    if (!e) return;
    this.engineModel = undefined;
    await Promise.allSettled([...this.contexts].map((c) => c.dispose()));
    e.dispose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}

/** The tokenizer stored in a GGUF file's metadata (no weights are read; no native code runs). */
export function loadTokenizer(file: string): Tokenizer {
  const reader = GgufReader.open(file);
  try {
    return tokenizerFromReader(reader);
  } finally {
    reader.close();
  }
}

function tokenizerFromReader(reader: GgufReader): Tokenizer {
  return Tokenizer.fromGgufMetadata((key) => {
    const v = reader.get(key);
    return v !== null && typeof v === 'object' && 'items' in v ? v.items : v; // arrays as their items
  });
}

/** Loads a GGUF model file. */
export function loadModel(file: string, options?: LoadModelOptions): Promise<XglmModel> {
  return XglmModel.load(file, options);
}

export { XglmError } from './errors.js';
export type { XglmErrorCode } from './errors.js';
export type { BackendInfo, KernelPlan, KvType } from './native.js';
import { native, type BackendInfo } from './native.js';

/** Which ggml CPU code this process runs (loads the native addon). */
export function backendInfo(): BackendInfo {
  return native().backendInfo();
}

export { pull, pullFiles, HubError } from './hub/index.js';
export type { PullOptions, PullResult, PullFilesOptions, PullFilesResult, PullProgress, PulledFile } from './hub/index.js';

export { Tokenizer, StreamDecoder, parseSentencePieceModel, xglmVocabularyFromSentencePiece } from './tokenizer/index.js';
export type { DecodeOptions, EncodeOptions, TokenizedText, TokenizerVocabulary, XglmVocabulary, SentencePieceModel } from './tokenizer/index.js';

export { convert, quantize, OUTPUT_TYPES } from './convert/index.js';
export type { ConvertOptions, ConvertResult, QuantizeOptions, QuantizeResult, OutputTypeName } from './convert/index.js';
export { GgufReader, GgufWriter, readGgufHeader, GgmlType, GgufValueType } from './gguf/index.js';
export type { GgufHeader, GgufKv, GgufValue, GgufTensorInfo, GgufTensorSpec } from './gguf/index.js';

export { loadModel, loadTokenizer, XglmModel } from './model.js';
export type { LoadModelOptions, ModelInfo } from './model.js';
export { XglmContext } from './context.js';
export type { ContextOptions, ContextStats } from './context.js';
export { Generation } from './generate.js';
export type { GenerateOptions, GenerationChunk, GenerationResult, FinishReason } from './generate.js';
export type { ScoreOptions, ScoreResult, ContinuationOptions, ContinuationScore, LogprobsOptions, LogprobsResult, PerplexityOptions, PerplexityResult } from './score.js';
export { describeModelFile } from './model-info.js';
export type { ModelFileInfo } from './model-info.js';

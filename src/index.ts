export { XglmError } from './errors.js';
export type { XglmErrorCode } from './errors.js';
export type { BackendInfo } from './native.js';
import { native, type BackendInfo } from './native.js';

/** Which ggml CPU code this process runs (loads the native addon). */
export function backendInfo(): BackendInfo {
  return native().backendInfo();
}

export { pull, pullFiles, HubError } from './hub/index.js';
export type { PullOptions, PullResult, PullFilesOptions, PullFilesResult, PullProgress, PulledFile } from './hub/index.js';

export { Tokenizer, StreamDecoder, parseSentencePieceModel, xglmVocabularyFromSentencePiece } from './tokenizer/index.js';
export type { DecodeOptions, EncodeOptions, TokenizedText, TokenizerVocabulary, XglmVocabulary, SentencePieceModel } from './tokenizer/index.js';

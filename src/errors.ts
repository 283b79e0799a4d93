/**
 * Every error xglm-node throws is an XglmError with a stable `code` and, where one helps,
 * a `hint` that tells the user what to do.
 */
export type XglmErrorCode =
  | 'ERR_XGLM_NATIVE_LOAD'
  | 'ERR_XGLM_BACKEND'
  | 'ERR_XGLM_INVALID_ARGUMENT'
  | 'ERR_XGLM_GGUF_INVALID'
  | 'ERR_XGLM_GGUF_LIMIT'
  | 'ERR_XGLM_UNSUPPORTED'
  | 'ERR_XGLM_CONVERT'
  | 'ERR_XGLM_UNSAFE_PICKLE'
  | 'ERR_XGLM_UNSAFE_ARCHIVE'
  | 'ERR_XGLM_TOKENIZER'
  | 'ERR_XGLM_MODEL_LOAD'
  | 'ERR_XGLM_CONTEXT_OVERFLOW'
  | 'ERR_XGLM_DISPOSED'
  | 'ERR_XGLM_ABORTED'
  | 'ERR_XGLM_COMPUTE'
  | 'ERR_XGLM_HUB'
  | 'ERR_XGLM_CHECKSUM'
  /** Windows: the file to replace or delete is mapped by a loaded model (src/files.ts). */
  | 'ERR_XGLM_FILE_IN_USE';

export class XglmError extends Error {
  readonly code: XglmErrorCode;
  readonly hint: string | undefined;

  constructor(code: XglmErrorCode, message: string, options: { hint?: string; cause?: unknown } = {}) {
    super(options.hint ? `${message} (hint: ${options.hint})` : message, { cause: options.cause });
    this.name = 'XglmError';
    this.code = code;
    this.hint = options.hint;
  }
}

export { parseSentencePieceModel, SpmModelType, SpmPieceType } from './spm-model.js';
export type { SentencePieceModel, SpmNormalizerSpec, SpmPiece, SpmTrainerSpec } from './spm-model.js';
export {
  GgufTokenType,
  madeupWord,
  spmIdToXglmId,
  xglmVocabularyFromSentencePiece,
  XGLM_BOS_ID,
  XGLM_EOS_ID,
  XGLM_FAIRSEQ_OFFSET,
  XGLM_MADEUP_WORD_COUNT,
  XGLM_PAD_ID,
  XGLM_UNK_ID,
} from './xglm-vocab.js';
export type { XglmVocabulary } from './xglm-vocab.js';
export { Tokenizer } from './tokenizer.js';
export type { EncodeOptions, TokenizedText, TokenizerSpecialIds, TokenizerVocabulary } from './tokenizer.js';
export { StreamDecoder } from './stream-decoder.js';
export type { DecodeOptions } from './stream-decoder.js';
export { vocabularyFromGgufMetadata, vocabularyFromSentencePiece, vocabularyFromTokenizerJson } from './loaders.js';
export type { LoadedVocabulary } from './loaders.js';

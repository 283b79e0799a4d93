/**
 * XGLM's vocabulary as HuggingFace's XGLMTokenizer (fairseq ids) numbers it, built from a
 * SentencePiece model. These are exactly the arrays a GGUF file stores as
 * `tokenizer.ggml.tokens` / `scores` / `token_type`, plus the normalizer settings.
 *
 *   HF id   0     1       2      3       4 … n     n+1 … n+7
 *   token   <s>   <pad>   </s>   <unk>   spm 3…n-1  <madeupword0> … <madeupword6>
 *
 * with n = number of spm pieces; vocabulary size n + 8.
 */
import { XglmError } from '../errors.js';
import { type SentencePieceModel, SpmPieceType } from './spm-model.js';

/** GGUF `tokenizer.ggml.token_type` values (llama.cpp's llama_token_type; same numbers as spm's enum). */
export const GgufTokenType = {
  UNDEFINED: 0,
  NORMAL: 1,
  UNKNOWN: 2,
  CONTROL: 3,
  USER_DEFINED: 4,
  UNUSED: 5,
  BYTE: 6,
} as const;
export type GgufTokenType = (typeof GgufTokenType)[keyof typeof GgufTokenType];

/** Fixed fairseq ids of XGLM's special tokens. */
export const XGLM_BOS_ID = 0;
export const XGLM_PAD_ID = 1;
export const XGLM_EOS_ID = 2;
export const XGLM_UNK_ID = 3;
/** ids 0–3 are fairseq's; spm piece k (k ≥ 3) has id k + XGLM_FAIRSEQ_OFFSET. */
export const XGLM_FAIRSEQ_OFFSET = 1;
export const XGLM_MADEUP_WORD_COUNT = 7;
const FAIRSEQ_SPECIALS = ['<s>', '<pad>', '</s>', '<unk>'] as const;

/** The XGLM vocabulary in HF id order, ready for GGUF or for the tokenizer. */
export interface XglmVocabulary {
  /** `tokenizer.ggml.tokens`: token text by HF id (pieces keep "▁" for spaces). */
  tokens: string[];
  /** `tokenizer.ggml.scores`: spm score for pieces, 0 for the specials and madeup words. */
  scores: Float32Array;
  /** `tokenizer.ggml.token_type`: 1 normal, 2 unknown (id 3), 3 control (0, 1, 2, madeup words). */
  tokenTypes: Int32Array;
  /** `tokenizer.ggml.precompiled_charsmap`: the normalizer blob, byte for byte. */
  precompiledCharsmap: Uint8Array;
  /** `tokenizer.ggml.add_space_prefix` (spm add_dummy_prefix). */
  addSpacePrefix: boolean;
  /** `tokenizer.ggml.remove_extra_whitespaces`. */
  removeExtraWhitespaces: boolean;
  /** spm escape_whitespaces (not stored in GGUF; always true for XGLM). */
  escapeWhitespaces: boolean;
  /** Number of SentencePiece pieces the vocabulary was built from (= tokens.length - 8). */
  spmPieceCount: number;
}

/** Name of the i-th madeup word (0 ≤ i < 7), as XGLMTokenizer spells it. */
export function madeupWord(i: number): string {
  return `<madeupword${i}>`;
}

/** HF id of a spm id (spm 0 = unknown maps to <unk> = 3, like XGLMTokenizer). */
export function spmIdToXglmId(spmId: number): number {
  if (spmId === 0) return XGLM_UNK_ID;
  if (spmId === 1) return XGLM_BOS_ID;
  if (spmId === 2) return XGLM_EOS_ID;
  return spmId + XGLM_FAIRSEQ_OFFSET;
}

/**
 * Builds XGLM's HF vocabulary from a parsed SentencePiece model.
 * @throws XglmError `ERR_XGLM_TOKENIZER` when the model does not have spm's default
 *   `<unk>`=0, `<s>`=1, `</s>`=2 layout that XGLMTokenizer assumes, or is not a unigram model.
 */
export function xglmVocabularyFromSentencePiece(model: SentencePieceModel): XglmVocabulary {
  const { pieces, trainerSpec, normalizerSpec } = model;
  if (trainerSpec.modelType !== 1) {
    throw new XglmError('ERR_XGLM_TOKENIZER', `XGLM uses a unigram SentencePiece model, this one has model_type ${trainerSpec.modelType}`);
  }
  if (trainerSpec.unkId !== 0 || trainerSpec.bosId !== 1 || trainerSpec.eosId !== 2 || pieces.length < 4) {
    throw new XglmError(
      'ERR_XGLM_TOKENIZER',
      `XGLM expects spm ids <unk>=0 <s>=1 </s>=2, got unk=${trainerSpec.unkId} bos=${trainerSpec.bosId} eos=${trainerSpec.eosId}`,
    );
  }
  const n = pieces.length;
  const size = n + 1 + XGLM_MADEUP_WORD_COUNT;
  const tokens = new Array<string>(size);
  const scores = new Float32Array(size);
  const tokenTypes = new Int32Array(size);
  for (let id = 0; id < FAIRSEQ_SPECIALS.length; id++) {
    tokens[id] = FAIRSEQ_SPECIALS[id]!;
    tokenTypes[id] = id === XGLM_UNK_ID ? GgufTokenType.UNKNOWN : GgufTokenType.CONTROL;
  }
  for (let k = 3; k < n; k++) {
    const p = pieces[k]!;
    const id = k + XGLM_FAIRSEQ_OFFSET;
    tokens[id] = p.piece;
    scores[id] = p.score;
    // spm types and GGUF token types share their numbering.
    tokenTypes[id] = p.type === SpmPieceType.UNKNOWN ? GgufTokenType.CONTROL : p.type;
  }
  for (let i = 0; i < XGLM_MADEUP_WORD_COUNT; i++) {
    tokens[n + 1 + i] = madeupWord(i);
    tokenTypes[n + 1 + i] = GgufTokenType.CONTROL;
  }
  return {
    tokens,
    scores,
    tokenTypes,
    precompiledCharsmap: normalizerSpec.precompiledCharsmap,
    addSpacePrefix: normalizerSpec.addDummyPrefix,
    removeExtraWhitespaces: normalizerSpec.removeExtraWhitespaces,
    escapeWhitespaces: normalizerSpec.escapeWhitespaces,
    spmPieceCount: n,
  };
}

/**
 * GGUF metadata of an XGLM model (docs/converting.md, “What is written”), with llama.cpp/gguf-py key spellings
 * (gguf-py/gguf/constants.py, including its historical "seperator").
 */
import { XGLM_EOS_ID, XGLM_PAD_ID, XGLM_UNK_ID } from '../tokenizer/xglm-vocab.js';
import type { GgufKv } from '../gguf/types.js';
import { kv } from '../gguf/writer.js';
import type { XglmHParams } from './config.js';

export const XGLM_ARCH = 'xglm';
export const GGML_QUANTIZATION_VERSION = 2;

export const GGUF_KEYS = {
  architecture: 'general.architecture',
  name: 'general.name',
  fileType: 'general.file_type',
  quantizationVersion: 'general.quantization_version',
  contextLength: `${XGLM_ARCH}.context_length`,
  embeddingLength: `${XGLM_ARCH}.embedding_length`,
  feedForwardLength: `${XGLM_ARCH}.feed_forward_length`,
  blockCount: `${XGLM_ARCH}.block_count`,
  headCount: `${XGLM_ARCH}.attention.head_count`,
  headCountKv: `${XGLM_ARCH}.attention.head_count_kv`,
  layerNormEpsilon: `${XGLM_ARCH}.attention.layer_norm_epsilon`,
  embeddingScale: `${XGLM_ARCH}.embedding_scale`,
  tokenizerModel: 'tokenizer.ggml.model',
  tokenizerPre: 'tokenizer.ggml.pre',
  tokens: 'tokenizer.ggml.tokens',
  scores: 'tokenizer.ggml.scores',
  tokenType: 'tokenizer.ggml.token_type',
  precompiledCharsmap: 'tokenizer.ggml.precompiled_charsmap',
  addSpacePrefix: 'tokenizer.ggml.add_space_prefix',
  removeExtraWhitespaces: 'tokenizer.ggml.remove_extra_whitespaces',
  addBos: 'tokenizer.ggml.add_bos_token',
  addEos: 'tokenizer.ggml.add_eos_token',
  bosId: 'tokenizer.ggml.bos_token_id',
  eosId: 'tokenizer.ggml.eos_token_id',
  unkId: 'tokenizer.ggml.unknown_token_id',
  sepId: 'tokenizer.ggml.seperator_token_id',
  padId: 'tokenizer.ggml.padding_token_id',
} as const;

/** The vocabulary as GGUF stores it, in HF id order. */
export interface GgufVocabulary {
  tokens: string[];
  scores: Float32Array;
  tokenTypes: Int32Array;
  precompiledCharsmap: Uint8Array;
  addSpacePrefix: boolean;
  removeExtraWhitespaces: boolean;
}

/** The full metadata list, in file order. */
export function xglmMetadata(hp: XglmHParams, vocab: GgufVocabulary, fileType: number, name: string): GgufKv[] {
  const out: GgufKv[] = [
    kv.str(GGUF_KEYS.architecture, XGLM_ARCH),
    kv.str(GGUF_KEYS.name, name),
    kv.u32(GGUF_KEYS.fileType, fileType),
    kv.u32(GGUF_KEYS.quantizationVersion, GGML_QUANTIZATION_VERSION),
    kv.u32(GGUF_KEYS.contextLength, hp.nCtx),
    kv.u32(GGUF_KEYS.embeddingLength, hp.nEmbd),
    kv.u32(GGUF_KEYS.feedForwardLength, hp.nFf),
    kv.u32(GGUF_KEYS.blockCount, hp.nLayer),
    kv.u32(GGUF_KEYS.headCount, hp.nHead),
    kv.u32(GGUF_KEYS.headCountKv, hp.nHead),
    kv.f32(GGUF_KEYS.layerNormEpsilon, hp.layerNormEps),
    kv.f32(GGUF_KEYS.embeddingScale, hp.scaleEmbedding ? Math.sqrt(hp.nEmbd) : 1),
    kv.str(GGUF_KEYS.tokenizerModel, 't5'),
    kv.str(GGUF_KEYS.tokenizerPre, 'default'),
    kv.strings(GGUF_KEYS.tokens, vocab.tokens),
    kv.f32s(GGUF_KEYS.scores, vocab.scores),
    kv.i32s(GGUF_KEYS.tokenType, vocab.tokenTypes),
  ];
  // llama.cpp refuses a charsmap shorter than its 4-byte header; an identity normalizer has none.
  if (vocab.precompiledCharsmap.length > 0) out.push(kv.u8s(GGUF_KEYS.precompiledCharsmap, vocab.precompiledCharsmap));
  out.push(
    kv.bool(GGUF_KEYS.addSpacePrefix, vocab.addSpacePrefix),
    kv.bool(GGUF_KEYS.removeExtraWhitespaces, vocab.removeExtraWhitespaces),
    // An encoded text starts with </s> (id 2), as XGLMTokenizer does: that is the "BOS" here.
    kv.bool(GGUF_KEYS.addBos, true),
    kv.bool(GGUF_KEYS.addEos, false),
    kv.u32(GGUF_KEYS.bosId, XGLM_EOS_ID),
    kv.u32(GGUF_KEYS.eosId, XGLM_EOS_ID),
    kv.u32(GGUF_KEYS.unkId, XGLM_UNK_ID),
    kv.u32(GGUF_KEYS.sepId, XGLM_EOS_ID),
    kv.u32(GGUF_KEYS.padId, XGLM_PAD_ID),
  );
  return out;
}

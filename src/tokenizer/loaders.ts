/**
 * Building a TokenizerVocabulary from where XGLM's vocabulary is stored: a SentencePiece .model,
 * a HuggingFace tokenizer.json (Unigram model + Precompiled normalizer), or GGUF metadata.
 */
import { XglmError } from '../errors.js';
import { parseSentencePieceModel } from './spm-model.js';
import type { TokenizerSpecialIds, TokenizerVocabulary } from './tokenizer.js';
import { GgufTokenType, xglmVocabularyFromSentencePiece, XGLM_EOS_ID } from './xglm-vocab.js';

export interface LoadedVocabulary {
  vocabulary: TokenizerVocabulary;
  specialIds: TokenizerSpecialIds;
}

function invalid(source: string, message: string, hint?: string): XglmError {
  return new XglmError('ERR_XGLM_TOKENIZER', `${source}: ${message}`, hint ? { hint } : {});
}

export function vocabularyFromSentencePiece(bytes: Uint8Array): LoadedVocabulary {
  const vocabulary = xglmVocabularyFromSentencePiece(parseSentencePieceModel(bytes));
  return { vocabulary, specialIds: { prefixTokenId: XGLM_EOS_ID } };
}

// ---------------------------------------------------------------------------------------------
// tokenizer.json

const XGLM_SPECIAL_TEXT = /^(<s>|<pad>|<\/s>|<unk>|<madeupword\d+>)$/;

interface JsonObject {
  [key: string]: unknown;
}

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Depth-first list of the normalizers of a (possibly nested) Sequence normalizer. */
function flattenNormalizers(n: unknown): JsonObject[] {
  if (!isObject(n)) return [];
  if (n.type === 'Sequence' && Array.isArray(n.normalizers)) return n.normalizers.flatMap(flattenNormalizers);
  return [n];
}

function flattenPreTokenizers(p: unknown): JsonObject[] {
  if (!isObject(p)) return [];
  if (p.type === 'Sequence' && Array.isArray(p.pretokenizers)) return p.pretokenizers.flatMap(flattenPreTokenizers);
  return [p];
}

/**
 * HF tokenizer.json with `model.type = "Unigram"`. Control tokens are the `special` added tokens,
 * the unknown token is `model.unk_id`; the normalizer's `Precompiled` charsmap is used as is;
 * whitespace handling follows what transformers' SpmConverter writes (a right Strip and/or a
 * Replace of space runs = remove_extra_whitespaces; Metaspace add_prefix_space or
 * prepend_scheme "always"/"first" = add_dummy_prefix).
 */
export function vocabularyFromTokenizerJson(json: string | object): LoadedVocabulary {
  const source = 'tokenizer.json';
  let root: unknown = json;
  if (typeof json === 'string') {
    try {
      root = JSON.parse(json);
    } catch (cause) {
      throw new XglmError('ERR_XGLM_TOKENIZER', `${source} is not valid JSON`, { cause });
    }
  }
  if (!isObject(root) || !isObject(root.model)) throw invalid(source, 'no "model" object');
  const model = root.model;
  if (model.type !== 'Unigram') {
    throw invalid(source, `model type ${JSON.stringify(model.type)} is not supported`, 'XGLM uses a Unigram (SentencePiece) model');
  }
  if (!Array.isArray(model.vocab) || model.vocab.length === 0) throw invalid(source, 'model.vocab is missing or empty');
  const n = model.vocab.length;
  const tokens = new Array<string>(n);
  const scores = new Float32Array(n);
  const tokenTypes = new Int32Array(n).fill(GgufTokenType.NORMAL);
  model.vocab.forEach((entry: unknown, id: number) => {
    if (!Array.isArray(entry) || typeof entry[0] !== 'string' || typeof entry[1] !== 'number') {
      throw invalid(source, `model.vocab[${id}] is not a [piece, score] pair`);
    }
    tokens[id] = entry[0];
    scores[id] = entry[1];
  });
  const unkId = model.unk_id;
  if (typeof unkId === 'number') {
    if (!Number.isInteger(unkId) || unkId < 0 || unkId >= n) throw invalid(source, `unk_id ${unkId} is outside the vocabulary`);
    tokenTypes[unkId] = GgufTokenType.UNKNOWN;
  }
  if (model.byte_fallback === true) {
    tokens.forEach((t, id) => {
      if (/^<0x[0-9A-F]{2}>$/.test(t)) tokenTypes[id] = GgufTokenType.BYTE;
    });
  }
  let prefixTokenId: number | undefined;
  if (Array.isArray(root.added_tokens)) {
    for (const t of root.added_tokens) {
      if (!isObject(t) || typeof t.id !== 'number' || typeof t.content !== 'string') continue;
      if (t.id < 0 || t.id >= n || !Number.isInteger(t.id)) throw invalid(source, `added token id ${t.id} is outside the vocabulary`);
      if (tokenTypes[t.id] === GgufTokenType.UNKNOWN) continue;
      tokenTypes[t.id] = t.special === true ? GgufTokenType.CONTROL : GgufTokenType.USER_DEFINED;
    }
  }
  // XGLMTokenizer's special tokens are special even when a tokenizer.json omits them from
  // added_tokens (older conversions): as normal pieces with score 0 they would win over text.
  tokens.forEach((t, id) => {
    if (tokenTypes[id] === GgufTokenType.NORMAL && XGLM_SPECIAL_TEXT.test(t)) tokenTypes[id] = GgufTokenType.CONTROL;
  });
  // The template post-processor names the token XGLM puts in front ("</s> $A").
  const post = root.post_processor;
  if (isObject(post) && post.type === 'TemplateProcessing' && Array.isArray(post.single)) {
    const first = post.single[0];
    if (isObject(first) && isObject(first.SpecialToken) && typeof first.SpecialToken.id === 'string') {
      const id = tokens.indexOf(first.SpecialToken.id);
      if (id >= 0) prefixTokenId = id;
    }
  }

  const normalizers = flattenNormalizers(root.normalizer);
  let precompiledCharsmap: Uint8Array = new Uint8Array(0);
  let removeExtraWhitespaces = false;
  for (const norm of normalizers) {
    if (norm.type === 'Precompiled') {
      if (typeof norm.precompiled_charsmap === 'string') {
        precompiledCharsmap = new Uint8Array(Buffer.from(norm.precompiled_charsmap, 'base64'));
      } else if (Array.isArray(norm.precompiled_charsmap)) {
        precompiledCharsmap = Uint8Array.from(norm.precompiled_charsmap as number[]);
      }
    } else if (norm.type === 'Strip' || norm.type === 'Replace') {
      removeExtraWhitespaces = true;
    }
  }
  let addSpacePrefix = true;
  for (const pre of [...flattenPreTokenizers(root.pre_tokenizer), ...flattenNormalizers(root.normalizer)]) {
    if (pre.type !== 'Metaspace' && pre.type !== 'Prepend') continue;
    if (pre.type === 'Metaspace') {
      if (typeof pre.add_prefix_space === 'boolean') addSpacePrefix = pre.add_prefix_space;
      if (pre.prepend_scheme === 'never') addSpacePrefix = false;
    }
  }
  return {
    vocabulary: { tokens, scores, tokenTypes, precompiledCharsmap, addSpacePrefix, removeExtraWhitespaces },
    specialIds: { prefixTokenId: prefixTokenId ?? XGLM_EOS_ID, ...(typeof unkId === 'number' ? { unknownTokenId: unkId } : {}) },
  };
}

// ---------------------------------------------------------------------------------------------
// GGUF

function numberArray(value: unknown, key: string): ArrayLike<number> {
  if (ArrayBuffer.isView(value) && !(value instanceof DataView)) {
    if (value instanceof BigInt64Array || value instanceof BigUint64Array) return Array.from(value, Number);
    return value as unknown as ArrayLike<number>;
  }
  if (Array.isArray(value)) {
    return value.map((v, i) => {
      if (typeof v !== 'number' && typeof v !== 'bigint') throw invalid('GGUF metadata', `${key}[${i}] is not a number`);
      return Number(v);
    });
  }
  throw invalid('GGUF metadata', `${key} is missing or not an array`, 'convert the model again with `xglm convert`');
}

function optionalId(get: (key: string) => unknown, key: string): number | undefined {
  const v = get(key);
  if (v === undefined || v === null) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n)) throw invalid('GGUF metadata', `${key} is not an integer`);
  return n;
}

/**
 * GGUF `tokenizer.ggml.*` keys (model "t5" = SentencePiece unigram). `getValue` returns a key's
 * value (strings, numbers/bigints, booleans, arrays or typed arrays — bare or as `{ items }`) or
 * undefined when absent. Absent keys take llama.cpp's defaults for a SentencePiece unigram model.
 */
export function vocabularyFromGgufMetadata(getValue: (key: string) => unknown): LoadedVocabulary {
  const source = 'GGUF metadata';
  // Accept array values either bare or wrapped as { itemType, items } (this package's GGUF reader).
  const get = (key: string): unknown => {
    const v = getValue(key);
    return isObject(v) && 'items' in v ? v.items : v;
  };
  const modelName = get('tokenizer.ggml.model');
  if (modelName !== undefined && modelName !== 't5') {
    throw invalid(source, `tokenizer.ggml.model is ${typeof modelName === 'string' ? JSON.stringify(modelName) : `not a string`}, expected "t5" (SentencePiece unigram)`);
  }
  const tokens = get('tokenizer.ggml.tokens');
  if (!Array.isArray(tokens) || tokens.some((t) => typeof t !== 'string')) {
    throw invalid(source, 'tokenizer.ggml.tokens is missing or not an array of strings');
  }
  const scoresRaw = get('tokenizer.ggml.scores');
  const scores = scoresRaw === undefined ? new Float32Array(tokens.length) : numberArray(scoresRaw, 'tokenizer.ggml.scores');
  const typesRaw = get('tokenizer.ggml.token_type');
  const tokenTypes = typesRaw === undefined ? new Int32Array(tokens.length).fill(GgufTokenType.NORMAL) : numberArray(typesRaw, 'tokenizer.ggml.token_type');
  const charsmapRaw = get('tokenizer.ggml.precompiled_charsmap');
  let precompiledCharsmap: Uint8Array = new Uint8Array(0);
  if (charsmapRaw instanceof Uint8Array) precompiledCharsmap = charsmapRaw;
  else if (charsmapRaw !== undefined) precompiledCharsmap = Uint8Array.from(numberArray(charsmapRaw, 'tokenizer.ggml.precompiled_charsmap'));
  const bool = (key: string, fallback: boolean): boolean => {
    const v = get(key);
    if (v === undefined) return fallback;
    if (typeof v === 'boolean') return v;
    if (typeof v === 'number' || typeof v === 'bigint') return Number(v) !== 0;
    throw invalid(source, `${key} is not a boolean`);
  };
  const bos = optionalId(get, 'tokenizer.ggml.bos_token_id');
  const unk = optionalId(get, 'tokenizer.ggml.unknown_token_id');
  const addBos = bool('tokenizer.ggml.add_bos_token', true);
  return {
    vocabulary: {
      tokens: tokens as string[],
      scores,
      tokenTypes,
      precompiledCharsmap,
      addSpacePrefix: bool('tokenizer.ggml.add_space_prefix', true),
      removeExtraWhitespaces: bool('tokenizer.ggml.remove_extra_whitespaces', true),
    },
    specialIds: {
      prefixTokenId: bos ?? XGLM_EOS_ID,
      addPrefixToken: addBos,
      ...(unk !== undefined ? { unknownTokenId: unk } : {}),
    },
  };
}

/**
 * XGLM's tokenizer: SentencePiece unigram segmentation with the model's own normalizer, in
 * HuggingFace XGLMTokenizer's (fairseq) id space. Works on any vocabulary in HF id order with
 * GGUF token types; `Tokenizer.fromSentencePiece` / `fromTokenizerJson` / `fromGgufMetadata`
 * build one from the three places XGLM's vocabulary is stored.
 */
import { XglmError } from '../errors.js';
import { encodeUtf8Into, GrowableBytes } from './bytes.js';
import { vocabularyFromGgufMetadata, vocabularyFromSentencePiece, vocabularyFromTokenizerJson } from './loaders.js';
import { Normalizer } from './normalizer.js';
import { isPythonWhitespace, StreamDecoder, type DecodeOptions } from './stream-decoder.js';
import { flattenPieces, PieceTrie } from './piece-trie.js';
import { PieceKind, UnigramModel } from './unigram.js';
import { GgufTokenType, XGLM_EOS_ID, XGLM_UNK_ID } from './xglm-vocab.js';

/** Everything the tokenizer needs, in HF id order (what GGUF's tokenizer.ggml.* keys hold). */
export interface TokenizerVocabulary {
  /** Token text by id; whitespace inside pieces is "▁". */
  tokens: readonly string[];
  /** Unigram score by id (only NORMAL pieces' scores matter). */
  scores: ArrayLike<number>;
  /** GGUF token type by id (see GgufTokenType). */
  tokenTypes: ArrayLike<number>;
  /** SentencePiece normalizer blob; empty = no character rewriting. */
  precompiledCharsmap: Uint8Array;
  /** Prepend "▁" (SentencePiece add_dummy_prefix). */
  addSpacePrefix: boolean;
  /** Strip and collapse whitespace (SentencePiece remove_extra_whitespaces). */
  removeExtraWhitespaces: boolean;
  /** Replace " " by "▁" during normalization. @default true */
  escapeWhitespaces?: boolean;
}

/** Ids that frame an encoded text. */
export interface TokenizerSpecialIds {
  /** Id put in front of every encoded text (XGLM: </s> = 2). @default 2 */
  prefixTokenId?: number;
  /** Id of the unknown token (XGLM: 3). @default the id whose type is UNKNOWN, else 3 */
  unknownTokenId?: number;
  /** Whether encode() adds the prefix token when the caller does not say (GGUF add_bos_token). @default true */
  addPrefixToken?: boolean;
}

export interface EncodeOptions {
  /**
   * Put the prefix token (XGLM's </s> = 2) first, as XGLMTokenizer does.
   * @default true (unless the vocabulary's GGUF add_bos_token says false)
   */
  addPrefixToken?: boolean;
  /**
   * Treat literal special-token strings in the text ("</s>", "<pad>", "<madeupword3>", …) as the
   * special tokens, like HuggingFace's tokenizer: the text is split at them and every chunk is
   * encoded separately (each gets its own leading "▁"). Off, they are ordinary text.
   * @default false
   */
  specialTokens?: boolean;
}

/** Encoding with the surface of every token, for inspection and tests. */
export interface TokenizedText {
  ids: number[];
  /**
   * The piece behind each id (same length as `ids`): the vocabulary piece, the normalized
   * characters of an unknown run, or the token text of a special token.
   */
  pieces: string[];
}

export { StreamDecoder, type DecodeOptions } from './stream-decoder.js';

const utf8Decoder = new TextDecoder('utf-8');
// Local copies: imported enum objects cost a property lookup per token on the decode path.
const TYPE_CONTROL: number = GgufTokenType.CONTROL;
const TYPE_UNKNOWN: number = GgufTokenType.UNKNOWN;
const TYPE_BYTE: number = GgufTokenType.BYTE;
const TYPE_NORMAL: number = GgufTokenType.NORMAL;
const TYPE_UNDEFINED: number = GgufTokenType.UNDEFINED;
const TYPE_USER_DEFINED: number = GgufTokenType.USER_DEFINED;
const TYPE_UNUSED: number = GgufTokenType.UNUSED;

export class Tokenizer {
  /** Number of ids (XGLM: SentencePiece pieces + 8). */
  readonly vocabSize: number;
  readonly prefixTokenId: number;
  readonly unknownTokenId: number;
  /** Default of EncodeOptions.addPrefixToken. */
  readonly addPrefixToken: boolean;
  private readonly tokens: readonly string[];
  private readonly tokenTypes: Uint8Array;
  private readonly normalizer: Normalizer;
  private readonly model: UnigramModel;
  /** Token text → first id with it, built on first use. */
  private tokenIds: Map<string, number> | null = null;
  /** Special (control/unknown) tokens by first character, longest first, for splitting. */
  private readonly specialsByFirstChar = new Map<string, Array<{ text: string; id: number }>>();
  /** Decoded text of each id, built lazily: "▁" → " "; null for specials. */
  private surfaces: Array<string | null> | null = null;
  // Reused buffers.
  private readonly utf8 = new GrowableBytes();
  private readonly normalized = new GrowableBytes();

  constructor(vocabulary: TokenizerVocabulary, specialIds: TokenizerSpecialIds = {}) {
    const { tokens, scores, tokenTypes } = vocabulary;
    const n = tokens.length;
    if (n === 0 || scores.length !== n || tokenTypes.length !== n) {
      throw new XglmError(
        'ERR_XGLM_TOKENIZER',
        `tokenizer vocabulary is inconsistent: ${n} tokens, ${scores.length} scores, ${tokenTypes.length} token types`,
      );
    }
    this.vocabSize = n;
    this.tokens = tokens;
    this.tokenTypes = new Uint8Array(n);
    const kinds = new Uint8Array(n);
    let firstUnknown = -1;
    let userDefinedCount = 0;
    for (let id = 0; id < n; id++) {
      const type = tokenTypes[id]!;
      const token = tokens[id];
      if (typeof token !== 'string') throw new XglmError('ERR_XGLM_TOKENIZER', `token ${id} is not a string`);
      this.tokenTypes[id] = type;
      switch (type) {
        case GgufTokenType.NORMAL:
        case GgufTokenType.UNDEFINED:
          kinds[id] = PieceKind.NORMAL;
          break;
        case GgufTokenType.USER_DEFINED:
          kinds[id] = PieceKind.USER_DEFINED;
          userDefinedCount++;
          break;
        case GgufTokenType.UNUSED:
          kinds[id] = PieceKind.UNUSED;
          break;
        case GgufTokenType.UNKNOWN:
          if (firstUnknown < 0) firstUnknown = id;
          this.addSpecial(token, id);
          break;
        case GgufTokenType.CONTROL:
          this.addSpecial(token, id);
          break;
        case GgufTokenType.BYTE:
          break;
        default:
          throw new XglmError('ERR_XGLM_TOKENIZER', `token ${id} has unknown token type ${type}`);
      }
    }
    for (const list of this.specialsByFirstChar.values()) list.sort((a, b) => b.text.length - a.text.length);
    this.prefixTokenId = specialIds.prefixTokenId ?? XGLM_EOS_ID;
    this.addPrefixToken = specialIds.addPrefixToken ?? true;
    this.unknownTokenId = specialIds.unknownTokenId ?? (firstUnknown >= 0 ? firstUnknown : XGLM_UNK_ID);
    for (const [name, id] of [
      ['prefix', this.prefixTokenId],
      ['unknown', this.unknownTokenId],
    ] as const) {
      if (!Number.isInteger(id) || id < 0 || id >= n) {
        throw new XglmError('ERR_XGLM_TOKENIZER', `${name} token id ${id} is outside the vocabulary of ${n}`);
      }
    }
    const types = this.tokenTypes;
    const matchable = (id: number): boolean => {
      const t = types[id];
      return t === TYPE_NORMAL || t === TYPE_UNDEFINED || t === TYPE_USER_DEFINED || t === TYPE_UNUSED;
    };
    this.model = new UnigramModel(flattenPieces(tokens, matchable), scores, kinds, this.unknownTokenId);
    let verbatim: ((bytes: Uint8Array, pos: number, end: number) => number) | null = null;
    if (userDefinedCount > 0) {
      // User-defined pieces pass the normalizer untouched (SentencePiece's PrefixMatcher).
      const matcher = new PieceTrie(flattenPieces(tokens, (id) => types[id] === TYPE_USER_DEFINED));
      verbatim = (bytes, pos, end) => matcher.longestMatch(bytes, pos, end);
    }
    this.normalizer = new Normalizer(
      {
        precompiledCharsmap: vocabulary.precompiledCharsmap,
        addDummyPrefix: vocabulary.addSpacePrefix,
        removeExtraWhitespaces: vocabulary.removeExtraWhitespaces,
        escapeWhitespaces: vocabulary.escapeWhitespaces ?? true,
      },
      verbatim,
    );
  }

  /** From the bytes of a SentencePiece .model file (XGLM's sentencepiece.bpe.model). */
  static fromSentencePiece(bytes: Uint8Array): Tokenizer {
    const { vocabulary, specialIds } = vocabularyFromSentencePiece(bytes);
    return new Tokenizer(vocabulary, specialIds);
  }

  /** From a HuggingFace tokenizer.json (text or parsed) with a Unigram model. */
  static fromTokenizerJson(json: string | object): Tokenizer {
    const { vocabulary, specialIds } = vocabularyFromTokenizerJson(json);
    return new Tokenizer(vocabulary, specialIds);
  }

  /**
   * From GGUF metadata: `get(key)` returns the value of a `tokenizer.ggml.*` key (arrays may be
   * plain or typed arrays) or undefined. Independent of any particular GGUF reader.
   */
  static fromGgufMetadata(get: (key: string) => unknown): Tokenizer {
    const { vocabulary, specialIds } = vocabularyFromGgufMetadata(get);
    return new Tokenizer(vocabulary, specialIds);
  }

  private addSpecial(text: string, id: number): void {
    if (text.length === 0) return;
    const first = text[0]!;
    let list = this.specialsByFirstChar.get(first);
    if (!list) this.specialsByFirstChar.set(first, (list = []));
    if (!list.some((s) => s.text === text)) list.push({ text, id });
  }

  /**
   * Encodes text to ids: `[2, …pieces]` for XGLM, exactly as XGLMTokenizer / SentencePiece.
   * Unpaired UTF-16 surrogates are read as U+FFFD (as TextEncoder does; Python cannot even
   * encode them).
   */
  encode(text: string, options: EncodeOptions = {}): number[] {
    const ids: number[] = [];
    if (options.addPrefixToken ?? this.addPrefixToken) ids.push(this.prefixTokenId);
    this.encodeInto(checkText(text), options.specialTokens ?? false, ids, null);
    return ids;
  }

  /** Like encode, and also returns the piece behind every id. */
  tokenize(text: string, options: EncodeOptions = {}): TokenizedText {
    const ids: number[] = [];
    const pieces: string[] = [];
    if (options.addPrefixToken ?? this.addPrefixToken) {
      ids.push(this.prefixTokenId);
      pieces.push(this.tokens[this.prefixTokenId]!);
    }
    this.encodeInto(checkText(text), options.specialTokens ?? false, ids, pieces);
    return { ids, pieces };
  }

  /** SentencePiece's normalized form of `text` (with "▁" for spaces), as the segmenter sees it. */
  normalize(text: string): string {
    const length = encodeUtf8Into(checkText(text), this.utf8);
    const n = this.normalizer.normalize(this.utf8.bytes, length, this.normalized);
    return utf8Decoder.decode(this.normalized.bytes.subarray(0, n));
  }

  private encodeInto(text: string, specialTokens: boolean, ids: number[], pieces: string[] | null): void {
    if (!specialTokens || this.specialsByFirstChar.size === 0) {
      this.encodeChunk(text, ids, pieces);
      return;
    }
    let chunkStart = 0;
    for (let i = 0; i < text.length; i++) {
      const candidates = this.specialsByFirstChar.get(text[i]!);
      if (candidates === undefined) continue;
      const match = candidates.find((s) => text.startsWith(s.text, i));
      if (match === undefined) continue;
      if (i > chunkStart) this.encodeChunk(text.slice(chunkStart, i), ids, pieces);
      ids.push(match.id);
      pieces?.push(match.text);
      chunkStart = i + match.text.length;
      i = chunkStart - 1;
    }
    if (chunkStart < text.length) this.encodeChunk(text.slice(chunkStart), ids, pieces);
  }

  private encodeChunk(text: string, ids: number[], pieces: string[] | null): void {
    const length = encodeUtf8Into(text, this.utf8);
    const n = this.normalizer.normalize(this.utf8.bytes, length, this.normalized);
    if (pieces === null) {
      this.model.encode(this.normalized.bytes, n, ids);
      return;
    }
    const spans: number[] = [];
    this.model.encode(this.normalized.bytes, n, ids, spans);
    for (let i = 0; i < spans.length; i += 2) {
      pieces.push(utf8Decoder.decode(this.normalized.bytes.subarray(spans[i]!, spans[i + 1]!)));
    }
  }

  /**
   * Decodes ids like HF XGLMTokenizer.decode(ids, skip_special_tokens=True,
   * clean_up_tokenization_spaces=False): special ids (control and unknown) are dropped, "▁"
   * becomes a space, and whitespace is stripped from both ends (Python's str.strip set).
   * With `skipSpecialTokens: false` their token text ("</s>", "<unk>", …) is kept in place.
   */
  decode(ids: ArrayLike<number>, options: DecodeOptions = {}): string {
    const skipSpecialTokens = options.skipSpecialTokens ?? true;
    const types = this.tokenTypes;
    const surfaces = this.surfaceTable();
    const parts: string[] = [];
    let byteRun: number[] | null = null;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      this.checkId(id);
      const type = types[id]!;
      if (type === TYPE_BYTE) {
        const byte = this.byteValue(id);
        if (byte >= 0) {
          (byteRun ??= []).push(byte);
          continue;
        }
      }
      const special = type === TYPE_CONTROL || type === TYPE_UNKNOWN;
      if (special && skipSpecialTokens) continue;
      if (byteRun !== null) {
        parts.push(utf8Decoder.decode(Uint8Array.from(byteRun)));
        byteRun = null;
      }
      parts.push(special ? this.tokens[id]! : (surfaces[id] ?? this.surface(id)));
    }
    if (byteRun !== null) parts.push(utf8Decoder.decode(Uint8Array.from(byteRun)));
    return pythonStrip(parts.join(''));
  }

  /** A decoder fed one id at a time; see StreamDecoder for the exact contract. */
  createStreamDecoder(options: DecodeOptions = {}): StreamDecoder {
    return new StreamDecoder(this, options);
  }

  /** Token text of `id` ("▁" kept), or undefined outside the vocabulary. */
  idToToken(id: number): string | undefined {
    return Number.isInteger(id) && id >= 0 && id < this.vocabSize ? this.tokens[id] : undefined;
  }

  /** Id of a token text, or undefined. */
  tokenToId(token: string): number | undefined {
    if (this.tokenIds === null) {
      this.tokenIds = new Map();
      for (let id = this.vocabSize - 1; id >= 0; id--) this.tokenIds.set(this.tokens[id]!, id);
    }
    return this.tokenIds.get(token);
  }

  /** GGUF token type of `id` (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte). */
  tokenType(id: number): number {
    this.checkId(id);
    return this.tokenTypes[id]!;
  }

  /** True for ids HF's decode drops with skip_special_tokens (control and unknown tokens). */
  isSpecial(id: number): boolean {
    const type = this.tokenType(id);
    return type === TYPE_CONTROL || type === TYPE_UNKNOWN;
  }

  private surfaceTable(): Array<string | null> {
    if (this.surfaces === null) this.surfaces = new Array<string | null>(this.vocabSize).fill(null);
    return this.surfaces;
  }

  /** @internal Decoding surface of a non-special, non-byte id ("▁" → " "). */
  surface(id: number): string {
    const surfaces = this.surfaceTable();
    let s = surfaces[id];
    if (s == null) {
      s = this.tokens[id]!.replaceAll('\u2581', ' ');
      surfaces[id] = s;
    }
    return s;
  }

  /** @internal The byte value of a BYTE token ("<0xAB>"), or -1 if it is not one. */
  byteValue(id: number): number {
    if (this.tokenTypes[id] !== TYPE_BYTE) return -1;
    const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(this.tokens[id]!);
    return m ? parseInt(m[1]!, 16) : -1;
  }

  /** @internal */
  checkId(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `token id ${id} is outside the vocabulary (0…${this.vocabSize - 1})`, {
        hint: 'ids must come from this model',
      });
    }
  }
}

function checkText(text: unknown): string {
  if (typeof text !== 'string') {
    throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `text to encode must be a string, got ${typeof text}`);
  }
  return text;
}

/** Python's str.strip(): removes whitespace (str.isspace) from both ends. */
function pythonStrip(s: string): string {
  let begin = 0;
  let end = s.length;
  while (begin < end && isPythonWhitespace(s.charCodeAt(begin))) begin++;
  while (end > begin && isPythonWhitespace(s.charCodeAt(end - 1))) end--;
  return s.slice(begin, end);
}

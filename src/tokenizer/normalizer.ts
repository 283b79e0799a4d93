/**
 * SentencePiece's text normalizer over UTF-8 bytes, driven by the model's precompiled_charsmap.
 *
 * The charsmap blob is `uint32 LE trie_size | trie (trie_size bytes of darts-clone double-array
 * units, uint32 LE each) | replacement strings (each NUL-terminated)`. The trie maps a byte
 * sequence of the input to the offset of its replacement string; at each position the longest
 * matching rule wins, and bytes no rule covers are copied one UTF-8 character at a time
 * (malformed UTF-8 becomes U+FFFD, one byte consumed).
 *
 * Around that per-character rewrite, SentencePiece applies, in this order: dropping leading
 * characters that normalize to exactly " ", the dummy prefix "▁", collapsing runs of spaces
 * (only spaces produced by the rewrite count), escaping " " to "▁", and dropping trailing "▁"
 * (any trailing U+2581, even one that was in the input).
 */
import { XglmError } from '../errors.js';
import { GrowableBytes } from './bytes.js';

export interface NormalizerOptions {
  /** The precompiled_charsmap blob; empty = no character rewriting. */
  precompiledCharsmap: Uint8Array;
  addDummyPrefix: boolean;
  removeExtraWhitespaces: boolean;
  escapeWhitespaces: boolean;
}

const SPACE = 0x20;
// "▁" (U+2581) in UTF-8.
const SPACE_SYMBOL = [0xe2, 0x96, 0x81] as const;
const REPLACEMENT_CHAR = Uint8Array.of(0xef, 0xbf, 0xbd);

/**
 * Length of a valid UTF-8 character at `pos` (1–4), or 0 if the bytes there are malformed
 * (bad continuation, overlong form, surrogate, above U+10FFFF, or truncated).
 */
function validUtf8Length(bytes: Uint8Array, pos: number, end: number): number {
  const b0 = bytes[pos]!;
  if (b0 < 0x80) return 1;
  const avail = end - pos;
  if (b0 >= 0xc2 && b0 <= 0xdf) {
    return avail >= 2 && (bytes[pos + 1]! & 0xc0) === 0x80 ? 2 : 0;
  }
  if (b0 >= 0xe0 && b0 <= 0xef) {
    if (avail < 3) return 0;
    const b1 = bytes[pos + 1]!;
    const b2 = bytes[pos + 2]!;
    if ((b1 & 0xc0) !== 0x80 || (b2 & 0xc0) !== 0x80) return 0;
    if (b0 === 0xe0 && b1 < 0xa0) return 0; // overlong
    if (b0 === 0xed && b1 >= 0xa0) return 0; // surrogate
    return 3;
  }
  if (b0 >= 0xf0 && b0 <= 0xf4) {
    if (avail < 4) return 0;
    const b1 = bytes[pos + 1]!;
    if ((b1 & 0xc0) !== 0x80 || (bytes[pos + 2]! & 0xc0) !== 0x80 || (bytes[pos + 3]! & 0xc0) !== 0x80) return 0;
    if (b0 === 0xf0 && b1 < 0x90) return 0; // overlong
    if (b0 === 0xf4 && b1 >= 0x90) return 0; // above U+10FFFF
    return 4;
  }
  return 0;
}

function brokenCharsmap(message: string): XglmError {
  return new XglmError('ERR_XGLM_TOKENIZER', `invalid precompiled_charsmap: ${message}`, {
    hint: 'the normalizer blob of the tokenizer is damaged; re-create it from sentencepiece.bpe.model',
  });
}

/** Read-only view of a darts-clone double array (the charsmap's trie). */
class DoubleArray {
  /** Value of the key found by the last successful longestPrefix() call. */
  lastValue = 0;

  constructor(private readonly units: Uint32Array) {}

  /**
   * Longest prefix of bytes[pos, end) that is a key. Returns the key length (0 = no match) and
   * stores the value in `this.lastValue`. Follows darts-clone's commonPrefixSearch unit layout:
   * bit 8 = has leaf, label = bits 0–7 plus bit 31, offset = bits 10–31 shifted by 8 when bit 9.
   */
  longestPrefix(bytes: Uint8Array, pos: number, end: number): number {
    const units = this.units;
    const n = units.length;
    if (n === 0) return 0;
    let unit = units[0]!;
    let nodePos = (unit >>> 10) << ((unit & 0x200) >>> 6);
    let longest = 0;
    for (let i = pos; i < end; i++) {
      const c = bytes[i]!;
      if (c === 0) break; // keys are NUL-terminated; a NUL input byte never continues a match
      nodePos ^= c;
      if (nodePos >= n) break;
      unit = units[nodePos]!;
      if ((unit & 0x800000ff) !== c) break;
      nodePos ^= (unit >>> 10) << ((unit & 0x200) >>> 6);
      if (nodePos >= n) break;
      if ((unit & 0x100) !== 0) {
        longest = i + 1 - pos;
        this.lastValue = units[nodePos]! & 0x7fffffff;
      }
    }
    return longest;
  }
}

/** Normalizes UTF-8 text exactly as SentencePiece's Normalizer::Normalize. */
export class Normalizer {
  private readonly trie: DoubleArray | null;
  private readonly replacements: Uint8Array;
  /** Byte length of each replacement string, by its offset (filled lazily: -1 = unknown). */
  private readonly replacementLength: Int32Array;
  private readonly options: NormalizerOptions;
  /** For user-defined pieces: they are copied verbatim, never rewritten (SentencePiece's PrefixMatcher). */
  private readonly verbatimPrefix: ((bytes: Uint8Array, pos: number, end: number) => number) | null;

  // Result of the last prefix() call: replacement bytes [start, end) in `source`.
  private prefixSource: Uint8Array = REPLACEMENT_CHAR;
  private prefixStart = 0;
  private prefixEnd = 0;

  constructor(options: NormalizerOptions, verbatimPrefix: ((bytes: Uint8Array, pos: number, end: number) => number) | null = null) {
    this.options = options;
    this.verbatimPrefix = verbatimPrefix;
    const blob = options.precompiledCharsmap;
    if (blob.length === 0) {
      this.trie = null;
      this.replacements = new Uint8Array(0);
      this.replacementLength = new Int32Array(0);
      return;
    }
    if (blob.length <= 4) throw brokenCharsmap('shorter than its header');
    const trieSize = new DataView(blob.buffer, blob.byteOffset, blob.length).getUint32(0, true);
    if (trieSize > blob.length - 4 || trieSize % 4 !== 0) {
      throw brokenCharsmap(`trie size ${trieSize} does not fit in ${blob.length} bytes`);
    }
    // Copy into an aligned buffer: the blob may sit at any offset inside a file buffer.
    const units = new Uint32Array(trieSize / 4);
    const view = new DataView(blob.buffer, blob.byteOffset + 4, trieSize);
    for (let i = 0; i < units.length; i++) units[i] = view.getUint32(i * 4, true);
    this.trie = new DoubleArray(units);
    this.replacements = blob.slice(4 + trieSize);
    this.replacementLength = new Int32Array(this.replacements.length).fill(-1);
  }

  /**
   * Rewrites the character(s) at bytes[pos]: sets prefixSource/Start/End to the replacement and
   * returns how many input bytes were consumed.
   */
  private prefix(bytes: Uint8Array, pos: number, end: number): number {
    if (this.verbatimPrefix !== null) {
      const n = this.verbatimPrefix(bytes, pos, end);
      if (n > 0) return this.copyAsIs(bytes, pos, n);
    }
    if (this.trie !== null) {
      const matched = this.trie.longestPrefix(bytes, pos, end);
      if (matched > 0) {
        const start = this.trie.lastValue;
        if (start >= this.replacements.length) throw brokenCharsmap(`replacement offset ${start} out of range`);
        let length = this.replacementLength[start]!;
        if (length < 0) {
          length = this.replacements.indexOf(0, start) - start;
          if (length < 0) length = this.replacements.length - start; // unterminated last string
          this.replacementLength[start] = length;
        }
        this.prefixSource = this.replacements;
        this.prefixStart = start;
        this.prefixEnd = start + length;
        return matched;
      }
    }
    const length = validUtf8Length(bytes, pos, end);
    if (length === 0) {
      this.prefixSource = REPLACEMENT_CHAR;
      this.prefixStart = 0;
      this.prefixEnd = 3;
      return 1;
    }
    return this.copyAsIs(bytes, pos, length);
  }

  private copyAsIs(bytes: Uint8Array, pos: number, length: number): number {
    this.prefixSource = bytes;
    this.prefixStart = pos;
    this.prefixEnd = pos + length;
    return length;
  }

  /**
   * Normalizes input[0, inputLength) into `out` (cleared first). Returns the normalized length.
   */
  normalize(input: Uint8Array, inputLength: number, out: GrowableBytes): number {
    out.length = 0;
    const { addDummyPrefix, removeExtraWhitespaces, escapeWhitespaces } = this.options;
    let pos = 0;
    if (removeExtraWhitespaces) {
      while (pos < inputLength) {
        const consumed = this.prefix(input, pos, inputLength);
        if (this.prefixEnd - this.prefixStart !== 1 || this.prefixSource[this.prefixStart] !== SPACE) break;
        pos += consumed;
      }
    }
    if (pos >= inputLength) return 0;

    out.reserve(inputLength * 3 + 3);
    if (addDummyPrefix) this.appendSpace(out, escapeWhitespaces);
    let isPrevSpace = removeExtraWhitespaces;
    while (pos < inputLength) {
      pos += this.prefix(input, pos, inputLength);
      const src = this.prefixSource;
      let s = this.prefixStart;
      const e = this.prefixEnd;
      if (isPrevSpace) while (s < e && src[s] === SPACE) s++;
      if (s < e) {
        for (let i = s; i < e; i++) {
          const b = src[i]!;
          if (b === SPACE && escapeWhitespaces) this.appendSpace(out, true);
          else out.push(b);
        }
        isPrevSpace = src[e - 1] === SPACE;
      }
      if (!removeExtraWhitespaces) isPrevSpace = false;
    }

    if (removeExtraWhitespaces) {
      const buf = out.bytes;
      if (escapeWhitespaces) {
        while (out.length >= 3 && buf[out.length - 3] === SPACE_SYMBOL[0] && buf[out.length - 2] === SPACE_SYMBOL[1] && buf[out.length - 1] === SPACE_SYMBOL[2]) {
          out.length -= 3;
        }
      } else {
        while (out.length > 0 && buf[out.length - 1] === SPACE) out.length--;
      }
    }
    return out.length;
  }

  private appendSpace(out: GrowableBytes, escape: boolean): void {
    if (escape) {
      out.push(SPACE_SYMBOL[0]);
      out.push(SPACE_SYMBOL[1]);
      out.push(SPACE_SYMBOL[2]);
    } else {
      out.push(SPACE);
    }
  }
}

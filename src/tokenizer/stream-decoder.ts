/**
 * Incremental decoding for generation: ids go in one at a time, text comes out.
 *
 * Contract (with the same options): after `push(ids[0]) … push(ids[k])`, the concatenation of
 * every chunk returned so far equals `tokenizer.decode(ids[0..k])` except that
 *   - the bytes of an unfinished UTF-8 character (only possible with byte-fallback pieces) are
 *     held back until the character completes;
 *   - trailing whitespace is held back until something other than whitespace follows — decode()
 *     strips it, and it would otherwise be emitted too early;
 * and after `flush()` the concatenation equals `tokenizer.decode(all ids)` exactly. Leading
 * whitespace is never emitted (decode() strips it too): the first visible chunk starts with the
 * first non-whitespace character, so the space XGLM's first piece carries ("▁Hello") disappears,
 * and a later "▁world" becomes " world".
 */
import type { Tokenizer } from './tokenizer.js';

export interface DecodeOptions {
  /**
   * Drop special tokens (XGLM ids 0–3 and the madeup words), as HF's skip_special_tokens=True.
   * With false, their token text ("</s>", "<unk>", …) appears in the output as it is.
   * @default true
   */
  skipSpecialTokens?: boolean;
}

/** Python's str.isspace() set for single UTF-16 code units (all of them are in the BMP). */
export function isPythonWhitespace(c: number): boolean {
  if (c <= 0x20) return c === 0x20 || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f);
  if (c < 0x85) return false;
  return (
    c === 0x85 ||
    c === 0xa0 ||
    c === 0x1680 ||
    (c >= 0x2000 && c <= 0x200a) ||
    c === 0x2028 ||
    c === 0x2029 ||
    c === 0x202f ||
    c === 0x205f ||
    c === 0x3000
  );
}

export class StreamDecoder {
  private readonly skipSpecialTokens: boolean;
  private readonly bytes = new TextDecoder('utf-8');
  /** True while bytes of an unfinished character sit inside `bytes`. */
  private pendingBytes = false;
  private started = false;
  private heldWhitespace = '';

  constructor(
    private readonly tokenizer: Tokenizer,
    options: DecodeOptions = {},
  ) {
    this.skipSpecialTokens = options.skipSpecialTokens ?? true;
  }

  /** Feeds one id; returns the text that is now certain (possibly ""). */
  push(id: number): string {
    const tokenizer = this.tokenizer;
    tokenizer.checkId(id);
    if (tokenizer.isSpecial(id)) {
      if (this.skipSpecialTokens) return '';
      return this.emit(this.finishBytes() + tokenizer.idToToken(id)!);
    }
    const byte = tokenizer.byteValue(id);
    if (byte >= 0) {
      this.pendingBytes = true;
      return this.emit(this.bytes.decode(Uint8Array.of(byte), { stream: true }));
    }
    return this.emit(this.finishBytes() + tokenizer.surface(id));
  }

  /** Ends the stream: emits what was held back except trailing whitespace, and resets. */
  flush(): string {
    const text = this.emit(this.finishBytes());
    this.started = false;
    this.heldWhitespace = '';
    return text;
  }

  /** Decodes what remains of a byte-fallback run (an unfinished character becomes U+FFFD). */
  private finishBytes(): string {
    if (!this.pendingBytes) return '';
    this.pendingBytes = false;
    return this.bytes.decode();
  }

  private emit(text: string): string {
    if (text.length === 0) return '';
    let s = this.heldWhitespace + text;
    let begin = 0;
    if (!this.started) {
      while (begin < s.length && isPythonWhitespace(s.charCodeAt(begin))) begin++;
      if (begin === s.length) {
        this.heldWhitespace = '';
        return '';
      }
      this.started = true;
    }
    let end = s.length;
    while (end > begin && isPythonWhitespace(s.charCodeAt(end - 1))) end--;
    this.heldWhitespace = s.slice(end);
    s = s.slice(begin, end);
    return s;
  }
}

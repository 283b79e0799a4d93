/**
 * SentencePiece's unigram segmentation (unigram_model.cc, EncodeOptimized): a Viterbi search over
 * byte positions of the normalized text, keeping for every end position only the best path.
 *
 * Exactness details that decide ties and therefore ids:
 * - path scores are stored as float32, candidates for vocabulary pieces are compared in double
 *   (the C++ adds a float score promoted to double), the unknown candidate in float32;
 * - candidates are offered by increasing start position, then increasing length, and replace the
 *   stored path only when strictly better;
 * - a character with no single-character piece gets an unknown node scored min_score - 10;
 * - UNUSED pieces are never matched; USER_DEFINED ones score length_in_bytes * max_score - 0.1;
 * - consecutive unknown nodes of the best path are merged into one (SentencePieceProcessor).
 */
import { type FlatPieces, PieceTrie } from './piece-trie.js';

/** Penalty SentencePiece subtracts from the lowest piece score to score an unknown character. */
export const UNKNOWN_PENALTY = 10;

/** How the search treats a matched piece, by id (PieceKind[id]). */
export const PieceKind = { NORMAL: 0, UNUSED: 1, USER_DEFINED: 2 } as const;
const KIND_NORMAL = PieceKind.NORMAL;
const KIND_UNUSED = PieceKind.UNUSED;
const KIND_USER_DEFINED = PieceKind.USER_DEFINED;

export class UnigramModel {
  private readonly trie: PieceTrie;
  private readonly scores: Float64Array;
  private readonly kinds: Uint8Array;
  private readonly unknownScore: number;
  private readonly maxScore: number;
  // Viterbi state, reused between calls (grown on demand).
  private bestScore = new Float32Array(1024);
  private bestStart = new Int32Array(1024);
  private bestId = new Int32Array(1024);

  /**
   * @param pieces the matchable pieces (NORMAL, USER_DEFINED and UNUSED ones; never control or unknown)
   * @param scores score by id
   * @param kinds PieceKind by id (only read for ids in `pieces`)
   * @param unknownId id emitted for a run of characters no piece covers
   */
  constructor(pieces: FlatPieces, scores: ArrayLike<number>, kinds: Uint8Array, readonly unknownId: number) {
    this.trie = new PieceTrie(pieces);
    this.scores = new Float64Array(kinds.length);
    this.kinds = kinds;
    // SentencePiece initialises these to FLT_MAX / FLT_MIN and only looks at NORMAL pieces.
    let minScore = 3.4028234663852886e38;
    let maxScore = 1.1754943508222875e-38;
    for (let k = 0; k < pieces.count; k++) {
      const id = pieces.ids[k]!;
      const score = Math.fround(scores[id]!);
      this.scores[id] = score;
      if (kinds[id] === KIND_NORMAL) {
        if (score < minScore) minScore = score;
        if (score > maxScore) maxScore = score;
      }
    }
    this.maxScore = maxScore;
    this.unknownScore = Math.fround(minScore - UNKNOWN_PENALTY);
  }

  /** Id of a piece spelled exactly by bytes[start, end) (matchable pieces only), or -1. */
  pieceId(bytes: Uint8Array, start: number, end: number): number {
    return this.trie.lookup(bytes, start, end);
  }

  private grow(size: number): void {
    if (size <= this.bestScore.length) return;
    let n = this.bestScore.length;
    while (n < size) n *= 2;
    this.bestScore = new Float32Array(n);
    this.bestStart = new Int32Array(n);
    this.bestId = new Int32Array(n);
  }

  /**
   * Segments text[0, size) (normalized UTF-8). Appends the ids to `ids` and, when `spans` is
   * given, the [start, end) byte range of each piece (two numbers per id).
   */
  encode(text: Uint8Array, size: number, ids: number[], spans?: number[]): void {
    if (size === 0) return;
    this.grow(size + 1);
    const bestScore = this.bestScore;
    const bestStart = this.bestStart;
    const bestId = this.bestId;
    bestStart.fill(-1, 0, size + 1);
    bestScore[0] = 0;
    const trie = this.trie;
    const nodeValue = trie.nodeValue;
    const scores = this.scores;
    const kinds = this.kinds;
    const unknownScore = this.unknownScore;
    const unknownId = this.unknownId;

    for (let start = 0; start < size; ) {
      const scoreHere = bestScore[start]!;
      // UTF-8 length from the lead byte, as SentencePiece's OneCharLen (continuation bytes count 1).
      const lead = text[start]!;
      const charLength = Math.min(lead < 0xc0 ? 1 : lead < 0xe0 ? 2 : lead < 0xf0 ? 3 : 4, size - start);
      let hasSingleChar = false;
      let node = 0;
      for (let pos = start; pos < size; ) {
        node = trie.child(node, text[pos]!);
        if (node < 0) break;
        pos++;
        const id = nodeValue[node]!;
        if (id < 0) continue;
        const kind = kinds[id]!;
        if (kind === KIND_UNUSED) continue;
        const length = pos - start;
        const score = kind === KIND_USER_DEFINED ? Math.fround(length * this.maxScore) - 0.1 : scores[id]!;
        const candidate = score + scoreHere;
        if (bestStart[pos] === -1 || candidate > bestScore[pos]!) {
          bestScore[pos] = candidate;
          bestStart[pos] = start;
          bestId[pos] = id;
        }
        if (length === charLength) hasSingleChar = true;
      }
      if (!hasSingleChar) {
        const end = start + charLength;
        const candidate = Math.fround(unknownScore + scoreHere);
        if (bestStart[end] === -1 || candidate > bestScore[end]!) {
          bestScore[end] = candidate;
          bestStart[end] = start;
          bestId[end] = unknownId;
        }
      }
      start += charLength;
    }

    // Backtrack into the tail of `ids` (reversed in place afterwards), merging unknown runs.
    const first = ids.length;
    const firstSpan = spans ? spans.length : 0;
    let end = size;
    while (end > 0) {
      const start = bestStart[end]!;
      const id = bestId[end]!;
      if (id === unknownId && ids.length > first && ids[ids.length - 1] === unknownId) {
        // Merge into the unknown piece that follows (we walk backwards).
        if (spans) spans[spans.length - 2] = start;
      } else {
        ids.push(id);
        if (spans) spans.push(start, end);
      }
      end = start;
    }
    reverseTail(ids, first, 1);
    if (spans) reverseTail(spans, firstSpan, 2);
  }
}

/** Reverses arr[from..] in groups of `stride` elements. */
function reverseTail(arr: number[], from: number, stride: number): void {
  let i = from;
  let j = arr.length - stride;
  while (i < j) {
    for (let k = 0; k < stride; k++) {
      const t = arr[i + k]!;
      arr[i + k] = arr[j + k]!;
      arr[j + k] = t;
    }
    i += stride;
    j -= stride;
  }
}

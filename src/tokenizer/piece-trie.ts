/**
 * A byte-level trie over vocabulary pieces for the Viterbi search, in compact typed arrays.
 *
 * Nodes are numbered breadth-first, so the children of a node are consecutive node ids
 * `firstChild[node] … firstChild[node + 1] - 1`, with their byte labels (ascending) in `labels`.
 * The root's 256 transitions are a direct table. About 9 bytes per node; no objects or strings
 * are touched while matching.
 */
const NONE = -1;

/** Pieces as one UTF-8 buffer: piece k is flat[start[k], start[k + 1]) with id ids[k]. */
export interface FlatPieces {
  flat: Uint8Array;
  start: Int32Array;
  ids: Int32Array;
  count: number;
}

/**
 * Collects the UTF-8 bytes of the tokens `select` accepts (non-empty ones only). Lone surrogates
 * become U+FFFD, as TextEncoder does.
 */
export function flattenPieces(tokens: readonly string[], select: (id: number) => boolean): FlatPieces {
  let capacity = 0;
  const chosen: number[] = [];
  for (let id = 0; id < tokens.length; id++) {
    if (!select(id) || tokens[id]!.length === 0) continue;
    chosen.push(id);
    capacity += tokens[id]!.length * 3;
  }
  const flat = new Uint8Array(capacity);
  const start = new Int32Array(chosen.length + 1);
  const ids = Int32Array.from(chosen);
  let pos = 0;
  for (let k = 0; k < chosen.length; k++) {
    pos = writeUtf8(tokens[chosen[k]!]!, flat, pos);
    start[k + 1] = pos;
  }
  return { flat: flat.subarray(0, pos), start, ids, count: chosen.length };
}

function writeUtf8(s: string, out: Uint8Array, pos: number): number {
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) {
      out[pos++] = c;
      continue;
    }
    if (c < 0x800) {
      out[pos++] = 0xc0 | (c >> 6);
      out[pos++] = 0x80 | (c & 0x3f);
      continue;
    }
    if (c >= 0xd800 && c <= 0xdfff) {
      const d = i + 1 < s.length ? s.charCodeAt(i + 1) : 0;
      if (c <= 0xdbff && d >= 0xdc00 && d <= 0xdfff) {
        const cp = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        out[pos++] = 0xf0 | (cp >> 18);
        out[pos++] = 0x80 | ((cp >> 12) & 0x3f);
        out[pos++] = 0x80 | ((cp >> 6) & 0x3f);
        out[pos++] = 0x80 | (cp & 0x3f);
        i++;
        continue;
      }
      c = 0xfffd;
    }
    out[pos++] = 0xe0 | (c >> 12);
    out[pos++] = 0x80 | ((c >> 6) & 0x3f);
    out[pos++] = 0x80 | (c & 0x3f);
  }
  return pos;
}
/** Above this many children, search the labels by bisection instead of a scan. */
const LINEAR_SCAN_MAX = 8;

export class PieceTrie {
  /** Piece id ending at each node, or -1. */
  readonly nodeValue: Int32Array;
  private readonly labels: Uint8Array;
  private readonly firstChild: Int32Array;
  private readonly rootChild: Int32Array;

  /**
   * @param pieces UTF-8 bytes and id of every piece to match (empty pieces are ignored; of two
   *   identical pieces the lower id wins, as SentencePiece keeps the first).
   */
  constructor(pieces: FlatPieces) {
    const { flat, start, ids, count } = pieces;
    // Built breadth-first with an MSD radix sort: node i owns order[lo[i], hi[i]), the pieces
    // whose first depth[i] bytes spell it; sorting that range by the next byte (stable, so the
    // lowest id comes first among duplicates) yields the children in label order.
    const maxNodes = flat.length + 1;
    const order = new Int32Array(count);
    for (let k = 0; k < count; k++) order[k] = k;
    const scratch = new Int32Array(count);
    const lo = new Int32Array(maxNodes);
    const hi = new Int32Array(maxNodes);
    const depth = new Int32Array(maxNodes);
    const labels = new Uint8Array(maxNodes);
    const firstChild = new Int32Array(maxNodes + 1);
    const nodeValue = new Int32Array(maxNodes).fill(NONE);
    const buckets = new Int32Array(258);
    /** Byte `d` of piece k, or -1 when the piece has exactly d bytes (it sorts first). */
    const keyAt = (k: number, d: number): number => (start[k]! + d < start[k + 1]! ? flat[start[k]! + d]! : -1);
    hi[0] = count;
    let next = 1;
    for (let node = 0; node < next; node++) {
      let a = lo[node]!;
      const b = hi[node]!;
      const d = depth[node]!;
      if (b - a <= 32) {
        for (let i = a + 1; i < b; i++) {
          const item = order[i]!;
          const key = keyAt(item, d);
          let j = i - 1;
          while (j >= a && keyAt(order[j]!, d) > key) {
            order[j + 1] = order[j]!;
            j--;
          }
          order[j + 1] = item;
        }
      } else {
        buckets.fill(0);
        for (let i = a; i < b; i++) buckets[keyAt(order[i]!, d) + 2]!++;
        for (let k = 1; k < 258; k++) buckets[k]! += buckets[k - 1]!;
        for (let i = a; i < b; i++) scratch[a + buckets[keyAt(order[i]!, d) + 1]!++] = order[i]!;
        order.set(scratch.subarray(a, b), a);
      }
      if (a < b && keyAt(order[a]!, d) < 0) nodeValue[node] = ids[order[a]!]!;
      while (a < b && keyAt(order[a]!, d) < 0) a++;
      firstChild[node] = next;
      while (a < b) {
        const label = keyAt(order[a]!, d);
        let end = a + 1;
        while (end < b && keyAt(order[end]!, d) === label) end++;
        const child = next++;
        labels[child] = label;
        lo[child] = a;
        hi[child] = end;
        depth[child] = d + 1;
        a = end;
      }
    }
    firstChild[next] = next;
    this.nodeValue = nodeValue.slice(0, next);
    this.labels = labels.slice(0, next);
    this.firstChild = firstChild.slice(0, next + 1);
    this.rootChild = new Int32Array(256).fill(NONE);
    for (let c = this.firstChild[0]!; c < this.firstChild[1]!; c++) this.rootChild[this.labels[c]!] = c;
  }

  /** Child of `node` along `byte`, or -1. */
  child(node: number, byte: number): number {
    if (node === 0) return this.rootChild[byte]!;
    const labels = this.labels;
    let a = this.firstChild[node]!;
    let b = this.firstChild[node + 1]!;
    if (b - a <= LINEAR_SCAN_MAX) {
      for (; a < b; a++) {
        const l = labels[a]!;
        if (l === byte) return a;
        if (l > byte) return NONE;
      }
      return NONE;
    }
    while (a < b) {
      const mid = (a + b) >>> 1;
      const l = labels[mid]!;
      if (l === byte) return mid;
      if (l < byte) a = mid + 1;
      else b = mid;
    }
    return NONE;
  }

  /** Byte length of the longest piece that starts bytes[start, end), or 0. */
  longestMatch(bytes: Uint8Array, start: number, end: number): number {
    let node = 0;
    let longest = 0;
    for (let i = start; i < end; i++) {
      node = this.child(node, bytes[i]!);
      if (node === NONE) break;
      if (this.nodeValue[node] !== NONE) longest = i + 1 - start;
    }
    return longest;
  }

  /** Id of the piece spelled exactly by bytes[start, end), or -1. */
  lookup(bytes: Uint8Array, start: number, end: number): number {
    let node = 0;
    for (let i = start; i < end; i++) {
      node = this.child(node, bytes[i]!);
      if (node === NONE) return NONE;
    }
    return node === 0 ? NONE : this.nodeValue[node]!;
  }
}

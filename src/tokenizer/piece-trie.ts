/**
 * A byte-level trie over vocabulary pieces for the Viterbi search: nodes are integers, the
 * transition (node, byte) → child lives in an open-addressing hash table of typed arrays, and the
 * root's 256 transitions are a direct table. No objects or strings are touched while matching.
 */
const EMPTY = -1;

export class PieceTrie {
  /** Piece id ending at each node, or -1. */
  readonly nodeValue: Int32Array;
  private readonly rootChild: Int32Array;
  private readonly keys: Int32Array;
  private readonly children: Int32Array;
  private readonly mask: number;

  /** @param pieces UTF-8 bytes and id of every piece to match (empty pieces are ignored). */
  constructor(pieces: ReadonlyArray<{ bytes: Uint8Array; id: number }>) {
    let totalBytes = 1;
    for (const p of pieces) totalBytes += p.bytes.length;
    if (totalBytes * 256 > 0x7fffffff) throw new RangeError('vocabulary too large for the piece trie');
    let capacity = 16;
    while (capacity < totalBytes * 2) capacity *= 2;
    this.mask = capacity - 1;
    this.keys = new Int32Array(capacity).fill(EMPTY);
    this.children = new Int32Array(capacity);
    this.rootChild = new Int32Array(256).fill(EMPTY);
    const values = new Int32Array(totalBytes).fill(EMPTY);
    let nodeCount = 1;
    for (const { bytes, id } of pieces) {
      if (bytes.length === 0) continue;
      let node = 0;
      for (let i = 0; i < bytes.length; i++) {
        let next = this.child(node, bytes[i]!);
        if (next === EMPTY) {
          next = nodeCount++;
          this.insert(node, bytes[i]!, next);
        }
        node = next;
      }
      // SentencePiece keeps the first id of a duplicated piece (its loader rejects duplicates).
      if (values[node] === EMPTY) values[node] = id;
    }
    this.nodeValue = values.subarray(0, nodeCount);
  }

  private slot(key: number): number {
    return Math.imul(key, 0x9e3779b1) >>> 0 & this.mask;
  }

  private insert(node: number, byte: number, child: number): void {
    if (node === 0) {
      this.rootChild[byte] = child;
      return;
    }
    const key = node * 256 + byte;
    let h = this.slot(key);
    while (this.keys[h] !== EMPTY) h = (h + 1) & this.mask;
    this.keys[h] = key;
    this.children[h] = child;
  }

  /** Child of `node` along `byte`, or -1. */
  child(node: number, byte: number): number {
    if (node === 0) return this.rootChild[byte]!;
    const key = node * 256 + byte;
    const keys = this.keys;
    const mask = this.mask;
    let h = Math.imul(key, 0x9e3779b1) >>> 0 & mask;
    for (;;) {
      const k = keys[h]!;
      if (k === key) return this.children[h]!;
      if (k === EMPTY) return EMPTY;
      h = (h + 1) & mask;
    }
  }

  /** Id of the piece spelled exactly by bytes[start, end), or -1. */
  lookup(bytes: Uint8Array, start: number, end: number): number {
    let node = 0;
    for (let i = start; i < end; i++) {
      node = this.child(node, bytes[i]!);
      if (node === EMPTY) return EMPTY;
    }
    return node === 0 ? EMPTY : this.nodeValue[node]!;
  }
}

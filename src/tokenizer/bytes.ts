/** A byte buffer that grows by doubling; reused across calls to keep the hot path allocation-free. */
export class GrowableBytes {
  bytes: Uint8Array;
  length = 0;

  constructor(initialCapacity = 1024) {
    this.bytes = new Uint8Array(initialCapacity);
  }

  reserve(capacity: number): void {
    if (capacity <= this.bytes.length) return;
    let size = this.bytes.length * 2;
    while (size < capacity) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.bytes.subarray(0, this.length));
    this.bytes = next;
  }

  push(b: number): void {
    if (this.length === this.bytes.length) this.reserve(this.length + 1);
    this.bytes[this.length++] = b;
  }
}

const encoder = new TextEncoder();

/** Encodes `text` as UTF-8 into `out` (cleared first); unpaired surrogates become U+FFFD. */
export function encodeUtf8Into(text: string, out: GrowableBytes): number {
  // A UTF-16 code unit never needs more than 3 UTF-8 bytes.
  out.reserve(text.length * 3);
  out.length = encoder.encodeInto(text, out.bytes).written;
  return out.length;
}

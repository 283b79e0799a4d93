/**
 * Stop strings over streamed text: text is released only once it can no longer be the
 * start of a stop string, so a stop string is never emitted partly, and the text before it
 * is emitted exactly.
 */
export class StopStringMatcher {
  private readonly stops: string[];
  private pending = '';
  private stopped = false;

  constructor(stops: readonly string[]) {
    this.stops = stops.filter((s) => s.length > 0);
  }

  get hasStopped(): boolean {
    return this.stopped;
  }

  /**
   * Feeds newly decoded text; returns the text safe to emit now and whether a stop string
   * was completed (then nothing after the stop string's start is ever emitted).
   */
  push(text: string): { emit: string; stop: string | undefined } {
    if (this.stopped) return { emit: '', stop: undefined };
    this.pending += text;
    if (this.stops.length === 0) {
      const emit = this.pending;
      this.pending = '';
      return { emit, stop: undefined };
    }
    // Earliest complete stop string wins.
    let at = -1;
    let which: string | undefined;
    for (const s of this.stops) {
      const i = this.pending.indexOf(s);
      if (i >= 0 && (at < 0 || i < at)) {
        at = i;
        which = s;
      }
    }
    if (which !== undefined) {
      const emit = this.pending.slice(0, at);
      this.pending = '';
      this.stopped = true;
      return { emit, stop: which };
    }
    // Hold back the longest suffix that is a prefix of some stop string.
    let hold = 0;
    for (const s of this.stops) {
      for (let k = Math.min(s.length - 1, this.pending.length); k > hold; k--) {
        if (this.pending.endsWith(s.slice(0, k))) {
          hold = k;
          break;
        }
      }
    }
    const emit = this.pending.slice(0, this.pending.length - hold);
    this.pending = this.pending.slice(this.pending.length - hold);
    return { emit, stop: undefined };
  }

  /** At the end of generation (no stop found): the held-back text. */
  flush(): string {
    const rest = this.stopped ? '' : this.pending;
    this.pending = '';
    return rest;
  }
}

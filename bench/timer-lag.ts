/**
 * The timer-lag probe: how long the JS thread was blocked while some work ran (used by
 * bench/responsiveness.ts and test/runtime.test.ts).
 */

/** How late a 1 ms interval timer on the JS thread fired while `work` ran. */
export interface TimerLag<T> {
  result: T;
  ticks: number;
  /** Lag in ms at a percentile (0..1). */
  percentile: (p: number) => number;
  maxMs: number;
}

export async function measureTimerLag<T>(work: () => Promise<T>): Promise<TimerLag<T>> {
  const lags: number[] = [];
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    lags.push(now - last - 1);
    last = now;
  }, 1);
  let result: T;
  try {
    result = await work();
  } finally {
    clearInterval(timer);
  }
  lags.sort((a, b) => a - b);
  return {
    result,
    ticks: lags.length,
    percentile: (p) => lags[Math.min(lags.length - 1, Math.floor(lags.length * p))] ?? 0,
    maxMs: lags[lags.length - 1] ?? 0,
  };
}

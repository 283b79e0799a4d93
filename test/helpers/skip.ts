/**
 * Visible skips: a test that cannot run here is declared with `test.skip` and the reason in its
 * title, so ava lists it as skipped (and .ci/run counts it) instead of passing it silently.
 */
import test, { type ImplementationFn } from 'ava';

/** A test declarer that skips every test it declares, appending `— skipped: <reason>` to the title. */
export function skipWith(reason: string): (title: string, fn: ImplementationFn<[]>) => void {
  return (title, fn) => test.skip(`${title} — skipped: ${reason}`, fn);
}

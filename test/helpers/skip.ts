/**
 * Visible skips: a test that cannot run here is declared with `test.skip` and the reason in its
 * title, so ava lists it as skipped (and .ci/run counts it) instead of passing it silently.
 */
import test, { type ImplementationFn } from 'ava';

/** Declares one test: `test`, `test.serial`, or a skipping declarer from skipWith. */
export type Declare = (title: string, fn: ImplementationFn<[]>) => void;

/** A declarer that skips every test it declares, appending `— skipped: <reason>` to the title. */
export function skipWith(reason: string): Declare {
  return (title, fn) => test.skip(`${title} — skipped: ${reason}`, fn);
}

/** `declare` (default: `test`) when `condition` holds, else a visible skip with `reason`. */
export function runIf(condition: boolean, reason: string, declare: Declare = test): Declare {
  return condition ? declare : skipWith(reason);
}

/**
 * What the engine layer does at every crossing into native code: argument checks that throw
 * precise XglmErrors (so the native side gets plain, valid values), and native rejections
 * turned into XglmErrors.
 */
import { XglmError, type XglmErrorCode } from '../errors.js';

/** Sequence ids are 0 .. MAX_SEQUENCES-1 (native/engine/xglm.h XGLM_MAX_SEQ). */
export const MAX_SEQUENCES = 64;

export function invalid(message: string, hint?: string): XglmError {
  return new XglmError('ERR_XGLM_INVALID_ARGUMENT', message, hint ? { hint } : {});
}

/** Native rejections carry `code`; anything else is passed through. */
function fromNative(err: unknown): unknown {
  const e = err as { code?: string; message?: string };
  if (e && typeof e.code === 'string' && e.code.startsWith('ERR_XGLM_') && !(err instanceof XglmError)) {
    const message = (e.message ?? '').replace(/^xglm: /, '');
    const hints: Partial<Record<string, string>> = {
      ERR_XGLM_CONTEXT_OVERFLOW: 'remove finished sequences (kvRemove) or create the context with a larger contextSize',
      ERR_XGLM_DISPOSED: 'create a new context',
    };
    return new XglmError(e.code as XglmErrorCode, message, { cause: err, ...(hints[e.code] ? { hint: hints[e.code] } : {}) });
  }
  return err;
}

/** Runs a native call, rejecting with an XglmError where the addon rejected with a code. */
export async function call<T>(p: () => Promise<T>): Promise<T> {
  try {
    return await p();
  } catch (err) {
    throw fromNative(err);
  }
}

export function checkInt(name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw invalid(`${name} must be an integer in [${min}, ${max}], got ${String(v)}`);
  }
  return v;
}

export function checkNumber(name: string, v: unknown, min: number, max: number, openMin = false): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max || (openMin && v === min)) {
    throw invalid(`${name} must be a number in ${openMin ? '(' : '['}${min}, ${max}], got ${String(v)}`);
  }
  return v;
}

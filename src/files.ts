/**
 * Replacing a file in place, with the one difference Windows makes: a model file that a process
 * has loaded is memory-mapped, and Windows refuses to delete, rename or overwrite a mapped file
 * (EPERM, EBUSY or EACCES) until every model using it is disposed — in this process or another.
 * Linux and macOS allow it (the loaded model keeps the old bytes).
 */
import fs from 'node:fs';
import { XglmError } from './errors.js';

const IN_USE_CODES = new Set(['EPERM', 'EBUSY', 'EACCES']);

/**
 * The error to throw when replacing or deleting `file` failed with `err`: on Windows, a failure
 * that a mapped (loaded) model explains says so; otherwise undefined (throw `err` itself).
 */
export function fileInUseError(err: unknown, file: string, platform: NodeJS.Platform = process.platform): XglmError | undefined {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (platform !== 'win32' || code === undefined || !IN_USE_CODES.has(code)) return undefined;
  return new XglmError('ERR_XGLM_FILE_IN_USE', `cannot replace ${file} (${code}): it is in use — on Windows a model file that is loaded (memory-mapped) cannot be deleted, renamed or overwritten`, {
    hint: 'dispose every model loaded from it (in this process and others, e.g. another xglm command), or write to another file name',
    cause: err,
  });
}

/** fs.promises.rename, with fileInUseError for the destination on Windows. */
export async function renameIntoPlace(from: string, to: string): Promise<void> {
  try {
    await fs.promises.rename(from, to);
  } catch (err) {
    throw fileInUseError(err, to) ?? err;
  }
}

import fs from 'node:fs';
import path from 'node:path';
import { XglmError } from '../errors.js';
import { packageRoot } from '../paths.js';
import type { CliIo } from './main.js';

/** The tiny random-weight model committed in ggml-models/, used when no -m is given. */
export const DEMO_MODEL = path.join(packageRoot, 'ggml-models', 'xglm-demo-q8_0.gguf');

let warned = false;

/** The model file to use: the given one (checked to exist) or the embedded demo model. */
export function resolveModelPath(given: string | number | boolean | undefined, io: CliIo): string {
  if (typeof given === 'string' && given !== '') {
    let stat: fs.Stats;
    try {
      stat = fs.statSync(given);
    } catch {
      throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `model file not found: ${given}`, {
        hint: "check the path, or get a model with 'xglm pull facebook/xglm-564M'",
      });
    }
    if (!stat.isFile()) throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `${given} is not a file`, { hint: 'pass a .gguf file with -m' });
    return given;
  }
  if (!fs.existsSync(DEMO_MODEL)) {
    throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', 'no model given and the embedded demo model is missing', {
      hint: "pass -m FILE, or get one with 'xglm pull facebook/xglm-564M --type q4_k_m'",
    });
  }
  if (!warned) {
    warned = true;
    io.stderr.write(
      "xglm: note: no -m given, using the tiny embedded demo model (random weights: its text is gibberish). " +
        "For the real model: xglm pull facebook/xglm-564M --type q4_k_m -o xglm-564M.gguf, then -m xglm-564M.gguf\n",
    );
  }
  return DEMO_MODEL;
}
